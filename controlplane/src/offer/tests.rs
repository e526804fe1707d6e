//! Offers shaped like Chromium's, FFmpeg's and aiortc's, and broken ones: what is negotiated, what the answer says, and what each error names.

use super::*;

/// The shape of Chromium's offer (trimmed), with two H264 profiles.
pub const CHROME_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\na=msid-semantic: WMS\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Ab3x\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=ice-options:trickle\r\n\
a=fingerprint:sha-256 0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:1B:1C:1D:1E:1F:20:21:22:23:24:25:26:27:28:29\r\n\
a=setup:actpass\r\na=mid:0\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=sendonly\r\na=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 102 103\r\nc=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Ab3x\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1A:1B:1C:1D:1E:1F:20:21:22:23:24:25:26:27:28:29\r\n\
a=setup:actpass\r\na=mid:1\r\na=sendonly\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f\r\n\
a=rtpmap:103 H264/90000\r\na=fmtp:103 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtcp-fb:103 nack\r\na=rtcp-fb:103 nack pli\r\na=rtcp-fb:103 ccm fir\r\n";

fn params(mode: Mode) -> AnswerParams<'static> {
    AnswerParams {
        mode,
        session: SessionId::new(5),
        ip: Ipv4Addr::LOCALHOST,
        port: 40002,
        ice_ufrag: "srvu",
        ice_pwd: "serverpasswordserverpass",
        fingerprint: &[0xAB; 32],
        ssrcs: &[2222, 1111],
        sources: SOURCES,
    }
}

const SOURCES: &[Option<String>] = &[None, None];

#[test]
fn chrome_publish_offer_negotiates_h264_pm1_and_opus() {
    let offer = parse(CHROME_OFFER).unwrap();
    let n = negotiate(&offer, Mode::Publish, &WireCodec::VIDEO).unwrap();
    assert_eq!(n.remote_ufrag, "Ab3x");
    assert_eq!(n.remote_fingerprint[0], 0x0A);
    let pts: Vec<(MediaKind, u8)> = n.tracks.iter().map(|t| (t.kind, t.codec.pt)).collect();
    assert_eq!(pts, vec![(MediaKind::Audio, 111), (MediaKind::Video, 103)]);
    let a = answer(&offer, &n, &params(Mode::Publish));
    for want in [
        "a=ice-lite",
        "a=group:BUNDLE 0 1",
        "m=audio 40002 UDP/TLS/RTP/SAVPF 111",
        "m=video 40002 UDP/TLS/RTP/SAVPF 103",
        "a=fmtp:103 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        "a=setup:passive",
        "a=recvonly",
        "a=rtcp-fb:103 nack pli",
        "a=candidate:1 1 udp 2130706431 127.0.0.1 40002 typ host",
    ] {
        assert!(a.contains(want), "missing {want:?} in\n{a}");
    }
    assert!(a.contains(&format!("a=fingerprint:sha-256 {}", ["AB"; 32].join(":"))));
    // Feedback the offer did not name is not added (RFC 4585 §4.2):
    // FFmpeg's WHIP muxer offers `nack` alone.
    let nack_only = CHROME_OFFER
        .replace("a=rtcp-fb:103 nack pli\r\n", "")
        .replace("a=rtcp-fb:103 ccm fir\r\n", "");
    let offer = parse(&nack_only).unwrap();
    let neg = negotiate(&offer, Mode::Publish, &WireCodec::VIDEO).unwrap();
    let a = answer(&offer, &neg, &params(Mode::Publish));
    assert!(a.contains("a=rtcp-fb:103 nack\r\n"), "{a}");
    assert!(!a.contains("nack pli") && !a.contains("ccm fir"), "{a}");
    // Audio levels are accepted when offered, with the offer's id.
    let with_level = CHROME_OFFER.replace(
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n",
    );
    let offer2 = parse(&with_level).unwrap();
    let n2 = negotiate(&offer2, Mode::Publish, &WireCodec::VIDEO).unwrap();
    assert_eq!(n2.tracks[0].audio_level, Some(1));
    let a2 = answer(&offer2, &n2, &params(Mode::Publish));
    assert!(
        a2.contains("a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
        "{a2}"
    );
    assert!(!a.contains("extmap"), "not offered, not answered");
    assert!(!a.contains("transport-cc"), "not offered, not answered");
    // Transport-wide sequence numbers: accepted with the offer's id and
    // transport-cc feedback on every line, so the publisher's estimator
    // runs on delay, not on loss alone.
    let with_twcc = CHROME_OFFER.replace(
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n",
        &format!("a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:3 {TWCC_URI}\r\n"),
    );
    let offer3 = parse(&with_twcc).unwrap();
    let n3 = negotiate(&offer3, Mode::Publish, &WireCodec::VIDEO).unwrap();
    // (This offer has extensions on its audio line only.)
    assert_eq!(n3.tracks[0].twcc, Some(3));
    let a3 = answer(&offer3, &n3, &params(Mode::Publish));
    for want in [
        format!("a=extmap:3 {TWCC_URI}"),
        "a=rtcp-fb:111 transport-cc".to_string(),
    ] {
        assert!(a3.contains(&want), "missing {want:?} in\n{a3}");
    }
    // A player's too: its feedback drives our estimate of its path.
    let play = with_twcc.replace("a=sendonly", "a=recvonly");
    let offer4 = parse(&play).unwrap();
    let n4 = negotiate(&offer4, Mode::Play, &WireCodec::VIDEO).unwrap();
    assert_eq!(n4.tracks[0].twcc, Some(3));
    let a4 = answer(&offer4, &n4, &params(Mode::Play));
    assert!(a4.contains(&format!("a=extmap:3 {TWCC_URI}")), "{a4}");
    assert!(a4.contains("a=rtcp-fb:111 transport-cc"), "{a4}");
    // A WHEP answer to the same offer fails: it only sends.
    assert!(negotiate(&offer, Mode::Play, &WireCodec::VIDEO)
        .unwrap_err()
        .contains("receives"));
}

/// aiortc's video line: `goog-remb` and abs-send-time, no transport-cc.
#[test]
fn a_publisher_without_transport_cc_gets_remb_on_abs_send_time() {
    let video = "a=rtcp-rsize\r\n";
    let remb =
        format!("a=rtcp-rsize\r\na=extmap:3 {ABS_SEND_TIME_URI}\r\na=rtcp-fb:* goog-remb\r\n");
    let offer = parse(&CHROME_OFFER.replace(video, &remb)).unwrap();
    assert_eq!(
        offer.media[1].codecs[2].feedback,
        vec!["goog-remb", "nack", "nack pli", "ccm fir"]
    );
    let n = negotiate(&offer, Mode::Publish, &WireCodec::VIDEO).unwrap();
    assert_eq!(
        (n.tracks[1].abs_send_time, n.tracks[1].twcc),
        (Some(3), None)
    );
    assert_eq!(
        n.tracks[0].abs_send_time, None,
        "the audio line offered neither"
    );
    let a = answer(&offer, &n, &params(Mode::Publish));
    for want in [
        format!("a=extmap:3 {ABS_SEND_TIME_URI}"),
        "a=rtcp-fb:103 goog-remb".to_string(),
    ] {
        assert!(a.contains(&want), "missing {want:?} in\n{a}");
    }
    // Beside transport-cc it is not taken: the publisher's own
    // estimator runs on the transport-cc feedback.
    let both = remb.replace(
        "a=rtcp-fb:* goog-remb\r\n",
        &format!("a=rtcp-fb:* goog-remb\r\na=rtcp-fb:* transport-cc\r\na=extmap:5 {TWCC_URI}\r\n"),
    );
    let offer = parse(&CHROME_OFFER.replace(video, &both)).unwrap();
    let n = negotiate(&offer, Mode::Publish, &WireCodec::VIDEO).unwrap();
    assert_eq!(
        (n.tracks[1].abs_send_time, n.tracks[1].twcc),
        (None, Some(5))
    );
    let a = answer(&offer, &n, &params(Mode::Publish));
    assert!(
        !a.contains("goog-remb") && !a.contains(ABS_SEND_TIME_URI),
        "{a}"
    );
    // Without goog-remb, abs-send-time alone is not taken either.
    let plain = remb.replace("a=rtcp-fb:* goog-remb\r\n", "");
    let offer = parse(&CHROME_OFFER.replace(video, &plain)).unwrap();
    assert_eq!(
        negotiate(&offer, Mode::Publish, &WireCodec::VIDEO)
            .unwrap()
            .tracks[1]
            .abs_send_time,
        None
    );
    // A player is never asked for it.
    let offer = parse(
        &CHROME_OFFER
            .replace(video, &remb)
            .replace("a=sendonly", "a=recvonly"),
    )
    .unwrap();
    assert!(negotiate(&offer, Mode::Play, &WireCodec::VIDEO)
        .unwrap()
        .tracks
        .iter()
        .all(|t| t.abs_send_time.is_none()));
}

/// RTX for the chosen H264 is accepted: a publisher's probes and
/// resends then never take media sequence numbers, and a player can
/// tell our resends from media.
#[test]
fn a_publishers_rtx_for_the_chosen_codec_is_accepted() {
    let offer = CHROME_OFFER
        .replace("SAVPF 96 102 103\r\n", "SAVPF 96 102 103 104 105\r\n")
        .replace(
            "a=rtpmap:103 H264/90000\r\n",
            "a=rtpmap:104 rtx/90000\r\na=fmtp:104 apt=102\r\na=rtpmap:105 rtx/90000\r\na=fmtp:105 apt=103\r\na=rtpmap:103 H264/90000\r\n",
        );
    let o = parse(&offer).unwrap();
    let n = negotiate(&o, Mode::Publish, &WireCodec::VIDEO).unwrap();
    assert_eq!(n.tracks[1].rtx.as_ref().map(|c| c.pt), Some(105));
    assert!(n.tracks[0].rtx.is_none());
    let a = answer(&o, &n, &params(Mode::Publish));
    for want in [
        "m=video 40002 UDP/TLS/RTP/SAVPF 103 105\r\n",
        "a=rtpmap:105 rtx/90000\r\na=fmtp:105 apt=103\r\n",
    ] {
        assert!(a.contains(want), "missing {want:?} in\n{a}");
    }
    assert!(!a.contains("apt=102"), "{a}");
    // A player's too: our resends for its line come on the RTX SSRC
    // the answer groups with the line's.
    let play = parse(&offer.replace("a=sendonly", "a=recvonly")).unwrap();
    let n = negotiate(&play, Mode::Play, &WireCodec::VIDEO).unwrap();
    assert_eq!(n.tracks[1].rtx.as_ref().map(|c| c.pt), Some(105));
    let a = answer(&play, &n, &params(Mode::Play));
    let rtx = gateway_ring::msg::rtx_ssrc(1111);
    for want in [
        "m=video 40002 UDP/TLS/RTP/SAVPF 103 105\r\n".to_string(),
        format!("a=ssrc-group:FID 1111 {rtx}\r\na=ssrc:{rtx} cname:mediagw\r\n"),
    ] {
        assert!(a.contains(&want), "missing {want:?} in\n{a}");
    }
}

#[test]
fn play_answer_announces_ssrcs() {
    let offer = parse(&CHROME_OFFER.replace("a=sendonly", "a=recvonly")).unwrap();
    let n = negotiate(&offer, Mode::Play, &WireCodec::VIDEO).unwrap();
    let a = answer(&offer, &n, &params(Mode::Play));
    assert!(a.contains("a=sendonly"));
    assert!(a.contains("a=ssrc:1111 cname:mediagw"));
    assert!(a.contains("a=ssrc:2222 cname:mediagw"));
    assert!(a.contains("a=msid:mediagw-0 audio0"), "{a}");
    // A line named for a participant carries its name as the stream id.
    let sources = [None, Some("alice".to_string())];
    let named = answer(
        &offer,
        &n,
        &AnswerParams {
            sources: &sources,
            ..params(Mode::Play)
        },
    );
    assert!(named.contains("a=msid:alice video1"), "{named}");
    assert!(named.contains("a=ssrc:1111 msid:alice video1"), "{named}");
    // A player offering audio levels gets them, under its own id.
    let levels = CHROME_OFFER.replace("a=sendonly", "a=recvonly").replace(
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:6 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n",
    );
    let offer = parse(&levels).unwrap();
    let n = negotiate(&offer, Mode::Play, &WireCodec::VIDEO).unwrap();
    assert_eq!(n.tracks[0].audio_level, Some(6));
    let a = answer(&offer, &n, &params(Mode::Play));
    assert!(a.contains(&format!("a=extmap:6 {AUDIO_LEVEL_URI}")), "{a}");
}

/// A player sees one publisher per line, up to MAX_TRACKS of them (a
/// voice room of 16); a line beyond is answered as rejected (port 0).
#[test]
fn a_player_takes_up_to_max_tracks_lines() {
    let lines = MAX_TRACKS + 1;
    let mids: Vec<String> = (0..lines).map(|i| i.to_string()).collect();
    let mut text = format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {}\r\n",
        mids.join(" ")
    );
    for mid in &mids {
        text.push_str(&format!(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\n\
             a=ice-ufrag:Ab3x\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
             a=fingerprint:sha-256 {}\r\na=setup:active\r\na=recvonly\r\na=rtcp-mux\r\n\
             a=rtpmap:111 opus/48000/2\r\n",
            ["0A"; 32].join(":")
        ));
    }
    let offer = parse(&text).unwrap();
    let n = negotiate(&offer, Mode::Play, &WireCodec::VIDEO).unwrap();
    assert_eq!(n.tracks.len(), MAX_TRACKS);
    assert!(n.tracks.iter().all(|t| t.kind == MediaKind::Audio));
    let a = answer(&offer, &n, &params(Mode::Play));
    assert_eq!(a.matches("m=audio 40002 ").count(), MAX_TRACKS, "{a}");
    assert_eq!(a.matches("m=audio 0 ").count(), 1, "{a}");
}

/// RFC 4145's roles: an offer of `passive` (FFmpeg 8's WHIP muxer)
/// makes us the DTLS client and the answer `active`, at media or
/// session level, for WHIP and WHEP; `actpass` and `active` leave us the
/// server, answering `passive`.
#[test]
fn a_passive_offer_makes_us_the_dtls_client() {
    let media_level = CHROME_OFFER.replace("a=setup:actpass", "a=setup:passive");
    let session_level = CHROME_OFFER
        .replace("a=setup:actpass\r\n", "")
        .replace("t=0 0\r\n", "t=0 0\r\na=setup:passive\r\n");
    let actpass = CHROME_OFFER.to_string();
    let active = CHROME_OFFER.replace("a=setup:actpass", "a=setup:active");
    for (text, role, setup) in [
        (&media_level, DtlsRole::Client, "active"),
        (&session_level, DtlsRole::Client, "active"),
        (&actpass, DtlsRole::Server, "passive"),
        (&active, DtlsRole::Server, "passive"),
    ] {
        for mode in [Mode::Publish, Mode::Play] {
            let text = match mode {
                Mode::Publish => text.clone(),
                Mode::Play => text.replace("a=sendonly", "a=recvonly"),
            };
            let offer = parse(&text).unwrap();
            let n = negotiate(&offer, mode, &WireCodec::VIDEO).unwrap();
            assert_eq!(n.dtls_role, role, "{mode:?}\n{text}");
            let a = answer(&offer, &n, &params(mode));
            assert_eq!(
                a.matches(&format!("a=setup:{setup}\r\n")).count(),
                2,
                "one per served line\n{a}"
            );
            assert_eq!(a.matches("a=setup:").count(), 2, "{a}");
        }
    }
}

#[test]
fn offers_we_cannot_serve_say_what_is_missing() {
    let cases = [
        ("", "v=0"),
        ("v=0\r\ns=-\r\n", "no m= lines"),
        (
            &CHROME_OFFER
                .replace("packetization-mode=1", "packetization-mode=0")
                .replace("a=rtpmap:96 VP8/90000\r\n", ""),
            "none of the codecs this gateway takes (H264, VP8, VP9, AV1; H264 with \
             packetization-mode=1, VP9 with profile-id=0, AV1 with profile=0): it offers \
             H264 packetization-mode=0",
        ),
        (&CHROME_OFFER.replace("opus/48000/2", "PCMU/8000"), "opus"),
        (&CHROME_OFFER.replace("a=group:BUNDLE 0 1", ""), "BUNDLE"),
        (
            &CHROME_OFFER.replace("a=fingerprint:sha-256", "a=fingerprint:sha-1"),
            "sha-256",
        ),
        (
            &CHROME_OFFER.replace("a=fingerprint", "a=x-fp"),
            "fingerprint",
        ),
        (&CHROME_OFFER.replace("a=ice-ufrag:Ab3x", ""), "ice-ufrag"),
        (&CHROME_OFFER.replace("a=rtcp-mux", ""), "rtcp-mux"),
        (
            &CHROME_OFFER.replace("a=setup:actpass", "a=setup:holdconn"),
            "a=setup:holdconn: the offer holds the DTLS connection back",
        ),
        (
            &CHROME_OFFER.replace("a=setup:actpass", "a=setup:sideways"),
            "a=setup:sideways is not a setup role",
        ),
    ];
    for (text, want) in cases {
        let err = parse(text)
            .and_then(|o| negotiate(&o, Mode::Publish, &WireCodec::VIDEO))
            .unwrap_err();
        assert!(err.contains(want), "{want:?} not in {err:?}");
    }
}

/// A video line gets the first codec of the server's list that it
/// offers (whatever the offer's own order), with that codec's RTX; the
/// others it offers stay as options, best first; a VP9 or AV1 profile
/// we cannot forward is not one.
#[test]
fn the_video_codec_is_the_first_of_the_servers_list_the_line_offers() {
    let with_more = CHROME_OFFER
        .replace("SAVPF 96 102 103", "SAVPF 96 97 102 103 104 98 99 45")
        .replace(
            "a=rtcp-fb:103 nack\r\n",
            "a=rtcp-fb:103 nack\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
         a=rtpmap:104 rtx/90000\r\na=fmtp:104 apt=103\r\n\
         a=rtpmap:98 VP9/90000\r\na=fmtp:98 profile-id=2\r\n\
         a=rtpmap:99 VP9/90000\r\na=fmtp:99 profile-id=0\r\n\
         a=rtpmap:45 AV1/90000\r\n",
        );
    let offer = parse(&with_more).unwrap();
    let video = |prefs: &[WireCodec]| {
        let n = negotiate(&offer, Mode::Publish, prefs).unwrap();
        n.tracks
            .into_iter()
            .find(|t| t.kind == MediaKind::Video)
            .unwrap()
    };
    let v = video(&WireCodec::VIDEO);
    assert_eq!(
        (v.wire, v.codec.pt, v.rtx.map(|r| r.pt)),
        (WireCodec::H264, 103, Some(104))
    );
    let order: Vec<(WireCodec, u8)> = v.options.iter().map(|o| (o.0, o.1.pt)).collect();
    assert_eq!(
        order,
        [
            (WireCodec::H264, 103),
            (WireCodec::Vp8, 96),
            (WireCodec::Vp9, 99),
            (WireCodec::Av1, 45)
        ]
    );
    let v = video(&[WireCodec::Vp8, WireCodec::H264]);
    assert_eq!(
        (v.wire, v.codec.pt, v.rtx.map(|r| r.pt)),
        (WireCodec::Vp8, 96, Some(97))
    );
    let v = video(&[WireCodec::Av1]);
    assert_eq!((v.wire, v.codec.pt, v.rtx), (WireCodec::Av1, 45, None));
    // A WHEP line named for a VP9 publisher takes VP9, if offered.
    let mut v = video(&WireCodec::VIDEO);
    assert!(v.prefer(WireCodec::Vp9));
    assert_eq!((v.wire, v.codec.pt), (WireCodec::Vp9, 99));
    let mut v = video(&[WireCodec::H264]);
    assert!(!v.prefer(WireCodec::Vp8), "not in the server's list");
    assert_eq!(v.wire, WireCodec::H264);
    // VP9 profile 2 alone: refused, and said.
    let only_vp9_2 = with_more
        .replace("a=rtpmap:99 VP9/90000\r\n", "")
        .replace("a=fmtp:99 profile-id=0\r\n", "");
    let err = negotiate(
        &parse(&only_vp9_2).unwrap(),
        Mode::Publish,
        &[WireCodec::Vp9],
    );
    assert!(err.as_ref().is_err_and(|e| e.contains("it offers VP8, H264 packetization-mode=0, H264 packetization-mode=1, VP9 profile-id=2, AV1")), "{err:?}");
}

/// A player's line carries every codec it offered that the session
/// numbers the same way: its own first in the answer, then the others
/// with their RTX, and the session's table says each codec's numbers.
#[test]
fn a_players_line_carries_every_codec_it_offered() {
    let offer = CHROME_OFFER
        .replace("a=sendonly", "a=recvonly")
        .replace("SAVPF 96 102 103", "SAVPF 96 97 102 103 104")
        .replace(
            "a=rtcp-fb:103 nack\r\n",
            "a=rtcp-fb:103 nack\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
             a=rtpmap:104 rtx/90000\r\na=fmtp:104 apt=103\r\na=rtcp-fb:96 nack\r\n",
        );
    let offer = parse(&offer).unwrap();
    let mut n = negotiate(&offer, Mode::Play, &WireCodec::VIDEO).unwrap();
    let table = carry_every_codec(&mut n.tracks);
    assert_eq!(table, [(103, 104), (96, 97), (0, 0), (0, 0)]);
    let video = n
        .tracks
        .iter()
        .find(|t| t.kind == MediaKind::Video)
        .unwrap();
    assert_eq!(video.wire, WireCodec::H264);
    let also: Vec<WireCodec> = video.also.iter().map(|a| a.0).collect();
    assert_eq!(also, [WireCodec::Vp8]);
    let a = answer(&offer, &n, &params(Mode::Play));
    assert!(
        a.contains("m=video 40002 UDP/TLS/RTP/SAVPF 103 104 96 97\r\n"),
        "{a}"
    );
    for line in [
        "a=rtpmap:96 VP8/90000",
        "a=fmtp:97 apt=96",
        "a=rtcp-fb:96 nack\r\n",
        "a=rtpmap:103 H264/90000",
    ] {
        assert!(a.contains(line), "{line} not in {a}");
    }
}

#[test]
fn junk_never_panics() {
    for junk in ["v=0\r\nm=\r\n", "v=0\r\nm=video x y\r\n", "v=0\r\na=rtpmap:\r\nm=audio 9 P 1\r\na=rtpmap:1\r\na=fmtp:300 x\r\n", "v=0\nm=video 9 UDP/TLS/RTP/SAVPF 96\na=fingerprint:sha-256 zz\na=ice-ufrag:a\na=ice-pwd:b\na=rtcp-mux\na=rtpmap:96 H264/90000\na=fmtp:96 packetization-mode=1\n"] {
        let _ = parse(junk).and_then(|o| negotiate(&o, Mode::Publish, &WireCodec::VIDEO));
    }
}
