//! CI smoke of the load tool: a short fan-out through the real gateway and
//! through the baseline relay, with every figure the JSON promises.

use std::process::Command;

use e2e::*;

#[test]
fn loadgen_fanout_smoke_with_baseline() {
    let gw = Gateway::start(1, &[]);
    let out = target_dir().join("e2e-logs").join("loadgen-smoke.json");
    let _ = std::fs::create_dir_all(out.parent().unwrap());
    let run = Command::new("timeout")
        .args(["-s", "KILL", "60"])
        .arg(bin("loadgen"))
        .args(["--api", &gw.api, "--admin-key", ADMIN_KEY])
        .args([
            "--scenario",
            "fanout",
            "--subscribers",
            "20",
            "--rate",
            "500",
        ])
        .args(["--seconds", "2", "--baseline", "--json"])
        .arg(&out)
        .output()
        .expect("run loadgen");
    let table = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    eprintln!("{table}");
    let r: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    for k in [
        "scenario",
        "pps_out",
        "mbps_out",
        "loss_ratio",
        "latency_us",
        "dataplane_cpu",
        "rss_per_session_bytes",
        "baseline_pps_out",
    ] {
        assert!(!r[k].is_null(), "{k} missing: {r}");
    }
    // 500 packets/s to 20 subscribers is 10 000 out; a smoke run on a shared
    // CI machine must get most of them through both paths.
    assert!(r["pps_out"].as_f64().unwrap() > 5_000.0, "{r}");
    assert!(r["baseline_pps_out"].as_f64().unwrap() > 5_000.0, "{r}");
    assert!(r["latency_us"]["samples"].as_u64().unwrap() > 100, "{r}");
    // The tool cleans up after itself.
    assert_eq!(gw.get("/v1/rooms").1["rooms"], json!([]));
    // Scenarios not written yet are refused, not faked.
    let other = Command::new(bin("loadgen"))
        .args(["--api", &gw.api, "--scenario", "meeting"])
        .output()
        .unwrap();
    assert_eq!(other.status.code(), Some(2));
}
