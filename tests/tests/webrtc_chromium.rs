//! A real browser through the gateway: headless Chromium (Debian's, which
//! sends H264 with OpenH264) publishes its fake camera from the gateway's
//! demo page over WHIP, and a second page plays the room over WHEP.

use std::process::Command;

use e2e::*;

#[test]
fn chromium_publishes_and_another_chromium_page_plays() {
    let driver = chromium_driver_dir();
    // This test thread and everything it starts live in a fresh namespace.
    let _ns = Netns::enter();
    let gw = Gateway::start(1, &[]);
    let shot = target_dir().join("e2e-logs").join("chromium-player.png");
    let _ = std::fs::create_dir_all(shot.parent().unwrap());
    let _ = std::fs::remove_file(&shot);
    let out = Command::new("timeout")
        .args(["-s", "KILL", "90", "node"])
        .arg(driver.join("chromium_whip.js"))
        .args([gw.api.as_str(), "browser", "4"])
        .arg(&shot)
        .arg(ADMIN_KEY)
        .current_dir(&driver)
        .output()
        .expect("run node");
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value =
        serde_json::from_str(text.lines().last().unwrap_or("")).unwrap_or_else(|_| {
            panic!(
                "no report from the Chromium driver ({}): {text}\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                gw.logs()
            )
        });
    eprintln!("chromium: {report}");
    assert!(report["error"].is_null(), "{report}\n{}", gw.logs());
    assert!(report["publisher_error"].is_null(), "{report}");
    assert!(report["player_error"].is_null(), "{report}");
    let player = &report["player"];
    assert!(player["framesDecoded"].as_u64().unwrap() >= 30, "{report}");
    assert_eq!(player["mimeType"], "video/H264", "{report}");
    let later = report["player_later"]["framesDecoded"].as_u64().unwrap();
    assert!(
        later > player["framesDecoded"].as_u64().unwrap(),
        "framesDecoded stopped growing: {report}"
    );
    let png = std::fs::read(&shot).expect("screenshot of the playing page");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
    // The demo page lists the room and its participants for the operator.
    let rooms = report["rooms_table"].as_str().unwrap_or("");
    assert!(
        rooms.contains("browser") && rooms.contains("whip"),
        "{report}"
    );
    assert!(
        report["publisher"]["framesSent"].as_u64().unwrap() > 0,
        "{report}"
    );
    eprintln!(
        "Chromium WHEP set-up to first decoded frame: {:.0} ms",
        player["firstFrameMs"].as_f64().unwrap()
    );

    // The player's join asked the publisher for a keyframe.
    let whip = gw.session_of_kind("browser", "whip");
    assert!(
        whip["stats"]["keyframe_requests"].as_u64().unwrap() >= 1,
        "{whip}"
    );
    assert_eq!(whip["stats"]["drops"]["auth_failed"], 0, "{whip}");
}
