//! Room events: as Server-Sent Events to an operator, and as signed webhooks
//! retried after a failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use e2e::*;

#[test]
fn room_events_stream_as_server_sent_events() {
    let gw = Gateway::start(1, &[]);
    gw.room("ev");
    let resp = ureq::get(&format!("{}/v1/rooms/ev/events", gw.api))
        .set("authorization", &format!("Bearer {ADMIN_KEY}"))
        .call()
        .expect("SSE stream");
    assert_eq!(resp.content_type(), "text/event-stream");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(resp.into_reader())
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let ingest = gw.ingest("ev", json!({ "kind": "video" }));
    assert_eq!(
        gw.delete(&format!("/v1/rooms/ev/ingest/{}", id_of(&ingest)))
            .0,
        204
    );
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while seen.len() < 4 && std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Some(data) = line.strip_prefix("data: ") {
                seen.push(serde_json::from_str::<Value>(data).unwrap());
            }
        }
    }
    let events: Vec<&str> = seen.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        [
            "participant_joined",
            "track_published",
            "track_unpublished",
            "participant_left"
        ],
        "{seen:?}"
    );
    assert_eq!(seen[0]["kind"], "rtp_ingest");
    assert_eq!(seen[0]["session"], ingest["id"]);
    assert_eq!(seen[0]["participant"], ingest["participant"]);
    // Unknown rooms are 404, and the stream needs the admin key.
    assert_eq!(gw.get("/v1/rooms/none/events").0, 404);
    let r = ureq::get(&format!("{}/v1/rooms/ev/events", gw.api)).call();
    assert!(matches!(r, Err(ureq::Error::Status(401, _))));
}

/// A webhook receiver that fails its first request, then accepts; it
/// reports (signature header, body) of every request.
fn flaky_receiver() -> (u16, mpsc::Receiver<(String, Vec<u8>)>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, conn) in l.incoming().enumerate() {
            let Ok(mut s) = conn else { continue };
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let (mut len, mut sig) = (0usize, String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("x-mgw-signature:") {
                    sig = line["x-mgw-signature:".len()..].trim().to_string();
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let status = if n == 0 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            if tx.send((sig, body)).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

#[test]
fn webhooks_are_signed_and_retried() {
    let (port, rx) = flaky_receiver();
    let secret = "webhook-secret-0123456789";
    let url = format!("http://127.0.0.1:{port}/hook");
    let gw = Gateway::start(1, &["--webhook-url", &url, "--webhook-secret", secret]);
    gw.room("hooked");
    gw.ingest("hooked", json!({ "kind": "audio" }));
    let first = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("first attempt");
    let retry = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("retry after the 500");
    assert_eq!(first.1, retry.1, "the same event is retried");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let hex: String = ring::hmac::sign(&key, &retry.1)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(retry.0, format!("sha256={hex}"), "signature over the body");
    let ev: Value = serde_json::from_slice(&retry.1).unwrap();
    assert_eq!(
        (ev["room"].as_str(), ev["event"].as_str()),
        (Some("hooked"), Some("participant_joined"))
    );
    assert_eq!(ev["kind"], "rtp_ingest");
}

/// The same events over a WebSocket upgrade of the same URL, read by
/// aiohttp's WebSocket client.
#[test]
fn room_events_stream_over_websocket() {
    use std::process::{Command, Stdio};
    let gw = Gateway::start(1, &[]);
    gw.room("wsr");
    let script = r#"
import asyncio, json, sys, aiohttp
async def main(url, key):
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(url, headers={"Authorization": f"Bearer {key}"}) as ws:
            print("connected", flush=True)
            for _ in range(2):
                msg = await asyncio.wait_for(ws.receive(), 10)
                print(msg.data, flush=True)
asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;
    let url = format!("ws://127.0.0.1:{}/v1/rooms/wsr/events", gw.http);
    let mut child = Command::new(aiortc_python())
        .args(["-c", script, &url, ADMIN_KEY])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "connected");
    let ingest = gw.ingest("wsr", json!({ "kind": "video" }));
    let events: Vec<Value> = lines
        .take(2)
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert!(wait_bounded(&mut child, Duration::from_secs(10)));
    assert_eq!(events[0]["event"], "participant_joined", "{events:?}");
    assert_eq!(events[0]["session"], ingest["id"]);
    assert_eq!(events[1]["event"], "track_published");
}

/// Room signalling for participants (aiohttp's WebSocket client, two room
/// tokens): a participant gets the room's participant list, then its
/// messages reach the others with the sender's name set by the server,
/// never echoed back; messages to nobody, too big or too many are refused
/// with an error frame and counted; another room's token, or one that
/// names no participant, does not get in.
#[test]
fn participants_message_each_other_through_the_room() {
    use std::process::{Command, Stdio};
    let gw = Gateway::start(1, &["--token-secret", "e2e-token-secret-0123456789"]);
    gw.room("sig");
    gw.room("other");
    let mint = |room: &str, participant: Option<&str>| {
        let (code, v) = gw.post(
            &format!("/v1/rooms/{room}/tokens"),
            json!({ "role": "subscribe", "participant": participant }),
        );
        assert_eq!(code, 201, "{v}");
        v["token"].as_str().unwrap().to_string()
    };
    // alice also publishes, so the list shows her tracks.
    let _ingest = gw.ingest("sig", json!({ "kind": "video", "participant": "alice" }));
    let script = r#"
import asyncio, json, sys, aiohttp

async def frame(ws, t):
    msg = await asyncio.wait_for(ws.receive(), t)
    return json.loads(msg.data)

async def next_of(ws, kind, t=5):
    while True:
        m = await frame(ws, t)
        if m.get("type") == kind:
            return m

async def all_of(ws, kind, t):
    out = []
    try:
        while True:
            m = await frame(ws, t)
            if m.get("type") == kind:
                out.append(m)
    except asyncio.TimeoutError:
        return out

async def main(base, ta, tb, tother, tnobody):
    r = {}
    url = f"{base}/v1/rooms/sig/events?token="
    async with aiohttp.ClientSession() as s:
        for name, tok in [("other_room", tother), ("nobody", tnobody)]:
            try:
                async with s.ws_connect(url + tok):
                    r[name] = "connected"
            except aiohttp.WSServerHandshakeError as e:
                r[name] = e.status
        a = await s.ws_connect(url + ta)
        r["hello_a"] = await next_of(a, "participants")
        b = await s.ws_connect(url + tb)
        r["hello_b"] = await next_of(b, "participants")
        await a.send_str(json.dumps({"type": "message", "to": None, "data": {"hi": 1}}))
        r["b_got"] = await next_of(b, "message")
        r["a_echo"] = await all_of(a, "message", 1.0)
        await b.send_str(json.dumps({"type": "message", "to": "alice", "from": "mallory", "data": "psst"}))
        r["a_got"] = await next_of(a, "message")
        await a.send_str(json.dumps({"type": "message", "to": "zed", "data": 1}))
        r["unknown"] = await next_of(a, "error")
        await a.send_str(json.dumps({"type": "message", "to": None, "data": "x" * 20000}))
        r["oversize"] = await next_of(a, "error")
        for i in range(60):
            await a.send_str(json.dumps({"type": "message", "to": None, "data": i}))
        r["flood_errors"] = len(await all_of(a, "error", 1.5))
        r["flood_delivered"] = len(await all_of(b, "message", 1.5))
        await a.close()
        await b.close()
    print(json.dumps(r), flush=True)

asyncio.run(main(*sys.argv[1:]))
"#;
    let base = format!("ws://127.0.0.1:{}", gw.http);
    let (ta, tb) = (mint("sig", Some("alice")), mint("sig", Some("bob")));
    let (tother, tnobody) = (mint("other", Some("eve")), mint("sig", None));
    let out = Command::new(aiortc_python())
        .args(["-c", script, &base, &ta, &tb, &tother, &tnobody])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(text.lines().last().unwrap_or(""))
        .unwrap_or_else(|_| panic!("no report: {text}\n{}", gw.logs()));
    assert_eq!(
        (r["other_room"].as_u64(), r["nobody"].as_u64()),
        (Some(403), Some(403)),
        "{r}"
    );
    assert_eq!(r["hello_a"]["you"], "alice", "{r}");
    let list = r["hello_b"]["participants"].as_array().unwrap();
    let alice = list
        .iter()
        .find(|p| p["name"] == "alice")
        .expect("alice listed");
    assert_eq!(alice["tracks"], json!(["video"]), "{r}");
    assert_eq!(r["b_got"]["from"], "alice");
    assert_eq!(r["b_got"]["data"], json!({ "hi": 1 }));
    assert_eq!(r["a_echo"], json!([]), "not echoed to its sender: {r}");
    assert_eq!(
        r["a_got"]["from"], "bob",
        "the server names the sender: {r}"
    );
    assert_eq!(r["a_got"]["to"], "alice");
    assert!(
        r["unknown"]["error"].as_str().unwrap().contains("zed"),
        "{r}"
    );
    assert!(
        r["oversize"]["error"].as_str().unwrap().contains("over"),
        "{r}"
    );
    let (errors, delivered) = (
        r["flood_errors"].as_u64().unwrap(),
        r["flood_delivered"].as_u64().unwrap(),
    );
    assert!(errors >= 30 && (10..=25).contains(&delivered), "{r}");
    assert_eq!(
        gw.metric("mgw_room_messages_total", "rate_limited"),
        errors as f64
    );
    assert_eq!(gw.metric("mgw_room_messages_total", "oversize"), 1.0);
    assert_eq!(
        gw.metric("mgw_room_messages_total", "unknown_participant"),
        1.0
    );
    assert_eq!(
        gw.metric("mgw_room_messages_total", "delivered"),
        2.0 + delivered as f64
    );
}

/// The room's active speaker comes from the publishers' RFC 6464 audio
/// levels (aiortc sends them when it encodes): of a quiet participant and a
/// loud one who came later, the loud one is announced.
#[test]
fn the_loud_participant_is_the_active_speaker() {
    let gw = Gateway::start(1, &[]);
    gw.room("talk");
    let mut events = gw.events("talk");
    let quiet_clip = clip_tone(320, 180, 660, -60);
    let loud_clip = clip_tone(320, 180, 440, 0);
    let mut quiet = AiortcPublisher::start_with(
        &gw,
        "talk?participant=quiet",
        &quiet_clip,
        20.0,
        &["--encode"],
    );
    quiet.connected();
    let mut loud = AiortcPublisher::start_with(
        &gw,
        "talk?participant=loud",
        &loud_clip,
        20.0,
        &["--encode"],
    );
    loud.connected();
    let ev = events.next_matching(Duration::from_secs(15), |e| e["event"] == "active_speaker");
    assert_eq!(ev["participant"], "loud", "{ev}");
}

/// An RTMP publisher's level is measured from its decoded AAC: a
/// mini-program pushing a tone beside a quiet browser is announced as the
/// active speaker.
#[test]
fn an_rtmp_publisher_can_be_the_active_speaker() {
    let gw = Gateway::start(1, &[]);
    gw.room("talk2");
    let mut events = gw.events("talk2");
    let quiet_clip = clip_tone(320, 180, 660, -60);
    let mut quiet = AiortcPublisher::start_with(
        &gw,
        "talk2?participant=quiet",
        &quiet_clip,
        20.0,
        &["--encode"],
    );
    quiet.connected();
    let mut mini = ffmpeg_rtmp_push(&gw, "talk2/mini", &clip_sized(320, 180, 440), 20);
    let ev = events.next_matching(Duration::from_secs(15), |e| e["event"] == "active_speaker");
    assert_eq!(ev["participant"], "mini", "{ev}");
    stop(&mut mini, Duration::from_secs(1));
}
