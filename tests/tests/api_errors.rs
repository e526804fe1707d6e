//! Bad HTTP input gets a 4xx/5xx with `{"error": ...}` and changes nothing.

use std::net::UdpSocket;

use e2e::*;

fn assert_error(resp: (u16, Value), code: u16, needle: &str) {
    let (got, body) = resp;
    assert_eq!(got, code, "{body}");
    let msg = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"));
    assert!(
        msg.contains(needle),
        "error {msg:?} should mention {needle:?}"
    );
}

#[test]
fn rooms_validate_names_and_conflicts() {
    let gw = Gateway::start(1, &[]);
    gw.room("demo");
    assert_error(
        gw.post("/v1/rooms", json!({ "name": "demo" })),
        409,
        "already exists",
    );
    assert_error(
        gw.post("/v1/rooms", json!({ "name": "no spaces" })),
        400,
        "bad room name",
    );
    assert_error(
        gw.post("/v1/rooms", json!({ "name": "" })),
        400,
        "bad room name",
    );
    assert_error(gw.post_raw("/v1/rooms", "{\"name\": "), 400, "invalid JSON");
    assert_error(gw.post_raw("/v1/rooms", "[1,2]"), 400, "invalid JSON");
    assert_error(
        gw.post("/v1/rooms", json!({ "nam": "x" })),
        400,
        "invalid JSON",
    );
    assert_error(gw.get("/v1/rooms/nope"), 404, "no room");
    assert_error(gw.delete("/v1/rooms/nope"), 404, "no room");
    assert_error(gw.get("/v1/nothing/here"), 404, "no such endpoint");
    let (code, list) = gw.get("/v1/rooms");
    assert_eq!(code, 200);
    assert_eq!(list["rooms"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(gw.delete("/v1/rooms/demo").0, 204);
    assert_error(gw.get("/v1/rooms/demo"), 404, "no room");
}

#[test]
fn sessions_reject_bad_parameters() {
    let gw = Gateway::start(1, &[]);
    gw.room("r");
    let ingest = |body: Value| gw.post("/v1/rooms/r/ingest/rtp", body);
    assert_error(ingest(json!({ "kind": "data" })), 400, "unknown kind");
    assert_error(
        ingest(json!({ "kind": "video", "codec": "VP8" })),
        400,
        "unsupported codec",
    );
    assert_error(
        ingest(json!({ "kind": "audio", "codec": "H264" })),
        400,
        "unsupported codec",
    );
    assert_error(
        ingest(json!({ "kind": "video", "payload_type": 300 })),
        400,
        "invalid JSON",
    );
    assert_error(
        ingest(json!({ "kind": "video", "payload_type": 200 })),
        400,
        "payload_type",
    );
    assert_error(
        ingest(json!({ "kind": "video", "payload_type": 0 })),
        400,
        "payload_type",
    );
    assert_error(
        ingest(json!({ "kind": "audio", "clock_rate": 8000 })),
        400,
        "clock_rate",
    );
    let srtp =
        |suite: &str, key: &str| json!({ "kind": "video", "srtp": { "suite": suite, "key": key } });
    assert_error(
        ingest(srtp("AES_CM_128_HMAC_SHA1_80", "!!!notbase64")),
        400,
        "base64",
    );
    assert_error(
        ingest(srtp(
            "AES_CM_128_HMAC_SHA1_80",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )),
        400,
        "30 bytes",
    );
    assert_error(
        ingest(srtp(
            "AEAD_AES_128_GCM",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )),
        400,
        "28 bytes",
    );
    assert_error(
        ingest(srtp("F8_128_HMAC_SHA1_80", "AAAA")),
        400,
        "unknown SRTP suite",
    );
    assert_error(
        gw.post("/v1/rooms/none/ingest/rtp", json!({ "kind": "video" })),
        404,
        "no room",
    );

    let egress = |body: Value| gw.post("/v1/rooms/r/egress/rtp", body);
    assert_error(
        egress(json!({ "host": "example.com", "port": 5000 })),
        400,
        "IPv4",
    );
    assert_error(
        egress(json!({ "host": "192.0.2.1", "port": 5000 })),
        403,
        "not allowed",
    );
    assert_error(
        egress(json!({ "host": "127.0.0.1", "port": 65534 })),
        400,
        "out of range",
    );
    assert_error(egress(json!({ "host": "127.0.0.1" })), 400, "invalid JSON");

    assert_error(gw.delete("/v1/rooms/r/ingest/12345"), 404, "no ingest");
    assert_error(gw.delete("/v1/rooms/r/ingest/abc"), 404, "no ingest");
    let (_, room) = gw.get("/v1/rooms/r");
    assert!(
        room["ingests"].as_array().unwrap().is_empty(),
        "nothing was created: {room}"
    );
    assert!(
        room["egresses"].as_array().unwrap().is_empty(),
        "nothing was created: {room}"
    );
}

#[test]
fn port_exhaustion_is_503_and_delete_frees_the_port() {
    // One shard, 25 ports (the harness's range per gateway).
    let gw = Gateway::start(1, &[]);
    gw.room("full");
    let mut ids = Vec::new();
    loop {
        let (code, v) = gw.post("/v1/rooms/full/ingest/rtp", json!({ "kind": "audio" }));
        if code == 503 {
            assert!(
                v["error"].as_str().unwrap().contains("no free UDP port"),
                "{v}"
            );
            break;
        }
        assert_eq!(code, 201, "{v}");
        ids.push((id_of(&v), port_of(&v)));
        assert!(ids.len() <= 25, "more sessions than ports");
    }
    assert_eq!(ids.len(), 25);
    let (_, h) = gw.healthz();
    assert_eq!(h["udp_ports"]["in_use"], 25, "{h}");

    // An ingest of another room is not the one to delete.
    gw.room("other");
    let (id, port) = ids.pop().unwrap();
    assert_eq!(gw.delete(&format!("/v1/rooms/other/ingest/{id}")).0, 404);
    assert_eq!(
        gw.delete(&format!("/v1/rooms/full/egress/{id}")).0,
        404,
        "an ingest is not an egress"
    );
    assert_eq!(gw.delete(&format!("/v1/rooms/full/ingest/{id}")).0, 204);
    // The kernel port is free again, and the API hands it out again.
    wait_for(
        &format!("port {port} to be free in the kernel after DELETE"),
        PATIENCE,
        || UdpSocket::bind(("127.0.0.1", port)).is_ok(),
        |&free| free,
    );
    let v = gw.ingest("full", json!({ "kind": "audio" }));
    assert_eq!(port_of(&v), port);
    let s = gw.session("full", &id);
    assert_eq!(s["state"], "ended", "{s}");

    // Deleting the room ends everything in it and frees every port.
    assert_eq!(gw.delete("/v1/rooms/full").0, 204);
    let (_, h) = gw.healthz();
    assert_eq!(h["udp_ports"]["in_use"], 0, "{h}");
}
