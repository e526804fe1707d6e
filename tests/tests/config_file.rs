//! A TOML config file sets defaults; flags (and the environment) win.

use e2e::*;

#[test]
fn config_file_settings_apply_and_flags_win() {
    let dir = target_dir().join("e2e-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("mgw-{}.toml", std::process::id()));
    // `udp_ports` here loses to the harness's --udp-ports flag; the others apply.
    std::fs::write(
        &path,
        "auto_room = false\nsession_burst = 2\nsession_rate = 0.01\nudp_ports = \"1-2\"\n\
         rtmp_max_conns_per_ip = 7\n",
    )
    .unwrap();
    let gw = Gateway::start(1, &["--config", path.to_str().unwrap()]);
    let (code, _, body) = post_sdp(&gw, "/whip/nowhere", "application/sdp", MINIMAL_OFFER);
    assert_eq!(code, 404, "auto_room = false from the file: {body}");
    gw.room("cfg");
    let a = gw.ingest("cfg", json!({ "kind": "audio" }));
    let port = port_of(&a);
    assert!(
        (gw.ports.0..=gw.ports.1).contains(&port),
        "the flag's port range wins over the file's: {port}"
    );
    // The second 404 above used one token of the burst of 2; this is the third.
    let (code, v) = gw.post("/v1/rooms/cfg/ingest/rtp", json!({ "kind": "video" }));
    assert_eq!(code, 429, "session_burst = 2 from the file: {v}");
    // The per-IP limit's old name still works, and the log says it is deprecated.
    assert_eq!(
        gw.metric("mgw_limit", "name=\"rtmp-max-nonplaying-per-ip\""),
        7.0
    );
    assert!(
        gw.logs()
            .contains("--rtmp-max-conns-per-ip (MGW_RTMP_MAX_CONNS_PER_IP) is deprecated"),
        "{}",
        gw.logs()
    );
}
