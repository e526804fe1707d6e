//! A crowd behind one address, with the default limits: an audience behind
//! a carrier-grade NAT, a school or an office reaches the gateway from one
//! IP. Its players get in (they do not count against the per-address limit),
//! while connections that never publish or play from the same address stay
//! bounded by it. Its own test binary, so no other test shares the 2 cores
//! with a thousand players.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use e2e::*;

/// The default `--rtmp-max-nonplaying-per-ip`.
const NONPLAYING_CAP: usize = 1024;

/// Connections of `socks` the server has closed (end of stream or reset),
/// marked in `closed`; looks once at each open one, without waiting.
fn closed_now(socks: &mut [TcpStream], closed: &mut [bool]) -> usize {
    let mut buf = [0u8; 512];
    for (s, c) in socks
        .iter_mut()
        .zip(closed.iter_mut())
        .filter(|(_, c)| !**c)
    {
        *c = match s.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        };
    }
    closed.iter().filter(|c| **c).count()
}

/// `n` idle connections to `port`: connected, then silent.
fn idle_connections(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect()
}

/// The room the load tool's crowd plays, once `players` play it.
fn room_with_players(gw: &Gateway, players: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = gw.get("/v1/rooms");
        let full = v["rooms"].as_array().and_then(|rooms| {
            rooms
                .iter()
                .find(|r| r["egresses"].as_u64() >= Some(players))
                .map(|r| r["name"].as_str().unwrap().to_string())
        });
        if let Some(room) = full {
            return room;
        }
        assert!(
            Instant::now() < deadline,
            "the crowd never got in: {v}\n{}",
            gw.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 1000 RTMP and 200 HTTP-FLV players of one push (the load tool's clients),
/// all from 127.0.0.1, all get the stream; during it, 1000 idle connections
/// to each port from the same address are refused past the per-address cap
/// of connections not playing, and the held ones are closed by the set-up
/// timeout (or give their place to a newcomer once stalled); a new player
/// still gets in and the crowd loses nothing. Then 300 WHEP offers from the
/// same address in a row all get 201.
#[test]
fn a_crowd_behind_one_address_gets_in_and_half_open_connections_stay_bounded() {
    let gw = Gateway::start_with_ports(1, 320, &[]);
    assert_eq!(
        gw.metric("mgw_limit", "name=\"rtmp-max-nonplaying-per-ip\""),
        NONPLAYING_CAP as f64,
        "the test is about the default limits"
    );
    let rtmp = format!("127.0.0.1:{}", gw.rtmp);
    let flv = format!("127.0.0.1:{}", gw.http_flv);
    let report = std::thread::scope(|scope| {
        let crowd = scope.spawn(|| {
            loadgen(
                &gw,
                &[
                    "--scenario",
                    "rtmp",
                    "--rtmp",
                    &rtmp,
                    "--http-flv",
                    &flv,
                    "--subscribers",
                    "1000",
                    "--flv-players",
                    "200",
                    "--seconds",
                    "14",
                ],
                240,
                "loadgen-crowd.json",
            )
        });
        let room = room_with_players(&gw, 1200);
        // Half-open connections from the crowd's address: the cap holds.
        let t0 = Instant::now();
        let mut idle = idle_connections(gw.rtmp, 1000);
        idle.extend(idle_connections(gw.http_flv, 1000));
        let mut closed = vec![false; idle.len()];
        let refused = idle.len() - NONPLAYING_CAP;
        while closed_now(&mut idle, &mut closed) < refused {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "more than {NONPLAYING_CAP} idle connections held: {} closed",
                closed.iter().filter(|c| **c).count()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let held = idle.len() - closed_now(&mut idle, &mut closed);
        eprintln!("idle connections held: {held} of {}", idle.len());
        assert!(held <= NONPLAYING_CAP, "{held} idle connections held");
        assert!(held > 0, "the cap is for connections in set-up, not none");
        // A new player from the same address still gets in: once the idle
        // ones have stalled, one gives it its place.
        let url = format!("rtmp://127.0.0.1:{}/live/{room}", gw.rtmp);
        let joined = Instant::now();
        while rtmp_first_frame(&url).is_none() {
            assert!(
                joined.elapsed() < Duration::from_secs(20),
                "no new player got in"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!(
            "a new player got in {:?} after the idle connections",
            joined.elapsed()
        );
        // Every held connection is closed by the set-up timeout (10 s).
        while closed_now(&mut idle, &mut closed) < idle.len() {
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "{} idle connections outlived the set-up timeout",
                closed.iter().filter(|c| !**c).count()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        crowd.join().expect("the load tool's thread")
    });
    // Every player got in and got the stream.
    assert_eq!(report["players_failed"], json!(0), "{report}");
    assert_eq!(report["flv_players_failed"], json!(0), "{report}");
    assert_eq!(report["first_frame_ms"]["never"], json!(0), "{report}");
    assert_eq!(report["flv_first_frame_ms"]["never"], json!(0), "{report}");
    // And kept it while the idle connections came and went: every player
    // got nearly every stamped frame sent in the window.
    for k in ["worst_player_ratio", "flv_worst_player_ratio"] {
        assert!(report[k].as_f64().unwrap() > 0.9, "{k}: {report}");
    }
    let hits = |limit: &str| gw.metric("mgw_limit_hits_total", &format!("limit=\"{limit}\""));
    assert!(
        hits("rtmp_nonplaying_per_ip") >= (2000 - NONPLAYING_CAP) as f64,
        "refusals are counted"
    );
    assert!(
        hits("rtmp_setup_timeout") + hits("rtmp_setup_stalled") >= 1.0,
        "closings are counted"
    );
    // WHEP players from one address: a class joining together gets in.
    let offer = MINIMAL_OFFER.replace("a=sendonly", "a=recvonly");
    gw.room("class");
    let t0 = Instant::now();
    // Four at a time, as a room's worth of browsers would.
    let sessions: Vec<String> = std::thread::scope(|scope| {
        let posts: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (0..75)
                        .map(|_| {
                            let (code, location, body) =
                                post_sdp(&gw, "/whep/class", "application/sdp", &offer);
                            assert_eq!(code, 201, "a WHEP offer: {body}");
                            location.expect("Location")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        posts.into_iter().flat_map(|p| p.join().unwrap()).collect()
    });
    eprintln!("300 WHEP offers answered in {:?}", t0.elapsed());
    for path in sessions {
        assert_eq!(gw.delete(&path).0, 200);
    }
}
