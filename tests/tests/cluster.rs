//! The pool of nodes (`--cluster`, issue 27): gateways on one Redis
//! (Debian's redis-server, started here on a loopback port) see each other
//! in `GET /v1/cluster`, and one that is killed leaves the pool when its
//! record expires.

use std::time::Instant;

use e2e::*;

/// The pool's room-token secret.
const SECRET: &str = "pool-token-secret-0123456789";

/// `GET /v1/cluster` of `gw`: the ids of the nodes it lists.
fn node_ids(gw: &Gateway) -> Vec<String> {
    let (code, v) = gw.get("/v1/cluster");
    assert_eq!(code, 200, "{v}");
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect()
}

/// A controlplane started with `args` (and the admin key) that refuses to
/// start: exit 2, no shared memory left behind; what it said.
fn refused_at_start(args: &[&str]) -> String {
    let shm = format!("mgw-test-cluster-{}-{}", std::process::id(), args.len());
    let out = std::process::Command::new("timeout")
        .args(["-s", "KILL", "30"])
        .arg(bin("controlplane"))
        .args(["--http", "127.0.0.1:0", "--shm-name", &shm])
        .args(["--admin-key", ADMIN_KEY])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!std::path::Path::new(&format!("/dev/shm/{shm}")).exists());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Redis stopped under a node and started again empty (a Redis without
/// persistence that restarted): the node serves its rooms meanwhile (an
/// RTMP player decodes its push, `/healthz` is 200), `GET /v1/cluster`
/// answers 503 naming the store, and the node is back in the pool within a
/// few heartbeats of Redis's return, the pool's secrets claimed again. A
/// second process with the id of a live node is refused, naming it.
#[test]
fn a_node_serves_through_a_redis_restart_and_an_id_is_one_nodes() {
    let mut redis = Redis::start();
    let url = redis.url();
    let args = [
        "--cluster",
        &url,
        "--node-id",
        "a",
        "--token-secret",
        SECRET,
    ];
    let a = Gateway::start(1, &args);
    let only_a = |v: &(u16, Value)| {
        v.0 == 200
            && v.1["nodes"]
                .as_array()
                .is_some_and(|n| n.len() == 1 && n[0]["id"] == "a")
    };
    wait_for("a in the pool", PATIENCE, || a.get("/v1/cluster"), only_a);
    a.room("served");
    // The pool has a token secret: RTMP needs room tokens too.
    let (publish, play) = (
        a.mint_token("served", "publish"),
        a.mint_token("served", "subscribe"),
    );
    let _push = Reap(ffmpeg_rtmp_push(
        &a,
        &format!("served/cam?token={publish}"),
        &clip(),
        60,
    ));
    let played = a.rtmp_url(&format!("served/cam?token={play}"));
    wait_playing(&played);

    redis.stop();
    let (_, v) = wait_for(
        "GET /v1/cluster to answer 503",
        PATIENCE,
        || a.get("/v1/cluster"),
        |(code, _)| *code == 503,
    );
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("the pool's store is unreachable"),
        "{v}"
    );
    let (video, audio, log) = ffmpeg_rtmp_play(&played, 2, std::time::Duration::from_secs(20));
    assert!(
        video >= 30 && audio >= 50,
        "{video} video / {audio} audio\n{log}"
    );
    assert_eq!(a.healthz().0, 200);

    redis.restart();
    let back = Instant::now();
    wait_for(
        "a back in the pool",
        PATIENCE,
        || a.get("/v1/cluster"),
        only_a,
    );
    eprintln!("back in the pool {:?} after Redis returned", back.elapsed());
    let secrets = redis.command("GET mgw:pool:secrets");
    assert!(
        secrets.starts_with('$') && !secrets.starts_with("$-1"),
        "the secrets claimed again: {secrets:?}"
    );

    // The same id, another process: refused while a renews its record.
    let err = refused_at_start(&args);
    assert!(
        err.contains("--node-id a is a live node's") && err.contains(&a.http.to_string()),
        "{err}"
    );
}

/// Two nodes join one pool and each lists both, with the addresses and
/// load the other said, and each room's home (the node that had it first); `kill -9` of one: the other stops listing it
/// within the record's 3 s (measured), while serving on, and its room is
/// re-homed on the node that has it too. A node without
/// `--cluster` says it is in no pool; one whose Redis does not answer, or
/// whose token secret is not the pool's, does not start.
#[test]
fn nodes_see_each_other_and_a_killed_one_leaves_the_pool() {
    let redis = Redis::start();
    let url = redis.url();
    let pool = |id: &'static str| {
        ["--cluster", &url, "--node-id", id, "--token-secret", SECRET].map(str::to_string)
    };
    let args = pool("a");
    let a = Gateway::start(1, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let args = pool("b");
    let mut b = Gateway::start(1, &args.iter().map(String::as_str).collect::<Vec<_>>());
    b.room("busy");
    let both = |ids: &Vec<String>| ids == &["a".to_string(), "b".to_string()];
    wait_for("a to list a and b", PATIENCE, || node_ids(&a), both);
    wait_for("b to list a and b", PATIENCE, || node_ids(&b), both);
    let (_, v) = a.get("/v1/cluster");
    assert_eq!(v["node"], "a", "{v}");
    let bs = &v["nodes"][1];
    assert_eq!(bs["state"], "up", "{v}");
    assert_eq!(bs["http"], format!("127.0.0.1:{}", b.http), "{v}");
    assert_eq!(bs["rtmp"], format!("127.0.0.1:{}", b.rtmp), "{v}");
    assert_eq!(bs["udp_ports"], json!([b.ports.0, b.ports.1]), "{v}");
    wait_for(
        "b's room in its load, as a sees it",
        PATIENCE,
        || a.get("/v1/cluster").1,
        |v| v["nodes"][1]["load"]["rooms"] == 1,
    );
    let (_, v) = a.get("/v1/cluster");
    let load = &v["nodes"][1]["load"];
    for field in ["sessions", "publishers", "shards", "cpu", "packets_per_s"] {
        assert!(load[field].is_number(), "{field}: {v}");
    }
    // A room's home: the node that had it first (b), held by a lease b
    // renews; a node that makes the room later does not take it.
    let home_of_busy = |gw: &Gateway| {
        let (_, v) = gw.get("/v1/cluster");
        let rooms = v["rooms"].as_array().cloned().unwrap_or_default();
        rooms
            .iter()
            .find(|r| r["name"] == "busy")
            .map(|r| r["home"].as_str().unwrap_or("").to_string())
    };
    wait_for(
        "busy's home to be b",
        PATIENCE,
        || home_of_busy(&a),
        |h| h.as_deref() == Some("b"),
    );
    a.room("busy");
    wait_for(
        "a's heartbeat with its room",
        PATIENCE,
        || a.get("/v1/cluster").1,
        |v| v["nodes"][0]["load"]["rooms"] == 1,
    );
    assert_eq!(home_of_busy(&a).as_deref(), Some("b"));
    // kill -9: no goodbye; its record expires.
    let killed = Instant::now();
    kill9(b.controlplane.as_ref().unwrap().id());
    wait_for(
        "a to stop listing b",
        PATIENCE,
        || node_ids(&a),
        |ids| ids == &["a".to_string()],
    );
    eprintln!("a killed node left the pool after {:?}", killed.elapsed());
    let _ = b.controlplane.take().map(|mut c| c.wait());
    // Its room is re-homed on the node that has it: a.
    wait_for(
        "busy re-homed on a",
        PATIENCE,
        || home_of_busy(&a),
        |h| h.as_deref() == Some("a"),
    );
    eprintln!("re-homed {:?} after the kill", killed.elapsed());
    assert_eq!(a.healthz().0, 200);

    let alone = Gateway::start(1, &[]);
    let (code, v) = alone.get("/v1/cluster");
    assert_eq!(code, 404, "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains("--cluster"),
        "{v}"
    );

    // Refused at start, saying why, leaving no shared memory behind: a
    // Redis that is not there, a token secret that is not the pool's.
    let [dead] = free_tcp_ports::<1>();
    let dead_url = format!("redis://127.0.0.1:{dead}");
    let err = refused_at_start(&["--cluster", &dead_url, "--token-secret", SECRET]);
    assert!(
        err.contains("--cluster") && err.contains(&dead.to_string()),
        "{err}"
    );
    let err = refused_at_start(&[
        "--cluster",
        &url,
        "--token-secret",
        "another-secret-0123456789",
    ]);
    assert!(
        err.contains("refused by the pool") && err.contains("--token-secret"),
        "{err}"
    );
    assert!(
        !err.contains("--admin-key and"),
        "the admin key is the pool's: {err}"
    );
    let err = refused_at_start(&["--cluster", &url]);
    assert!(
        err.contains("needs --admin-key and --token-secret"),
        "{err}"
    );

    // Draining a for a rolling restart: no new sessions or RTMP clients
    // there, /healthz says so (503), the pool lists it as draining.
    let (code, v) = a.post("/v1/cluster/drain", json!({}));
    assert_eq!((code, &v["state"]), (200, &json!("draining")), "{v}");
    let (code, h) = a.healthz();
    assert_eq!((code, &h["status"]), (503, &json!("draining")), "{h}");
    a.room("later");
    let (code, v) = a.post("/v1/rooms/later/ingest/rtp", json!({ "kind": "video" }));
    assert_eq!(code, 503, "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains("draining"),
        "{v}"
    );
    // RTMP and HTTP-FLV clients too: a mini-program's push is refused with
    // an onStatus error naming the drain, an HTTP-FLV player gets 503.
    let push = std::process::Command::new("timeout")
        .args([
            "-s",
            "KILL",
            "20",
            "ffmpeg",
            "-hide_banner",
            "-re",
            "-t",
            "3",
            "-i",
        ])
        .arg(clip())
        .args(["-c", "copy", "-f", "flv"])
        .arg(a.rtmp_url("later/bob"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&push.stderr);
    assert!(!push.status.success(), "{err}");
    assert!(err.contains("draining"), "{err}");
    let flv = ureq::get(&a.flv_url("later/bob", "")).call();
    match flv {
        Err(ureq::Error::Status(503, r)) => {
            let body = r.into_string().unwrap_or_default();
            assert!(body.contains("draining"), "{body}");
        }
        other => panic!("HTTP-FLV of a draining node: {other:?}"),
    }
    wait_for(
        "the pool to list a as draining",
        PATIENCE,
        || a.get("/v1/cluster").1,
        |v| v["nodes"][0]["state"] == "draining",
    );
}
