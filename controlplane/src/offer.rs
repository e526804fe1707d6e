//! WebRTC offer/answer (RFC 8829 JSEP, RFC 8839 ICE, RFC 8842 DTLS) for
//! WHIP and WHEP: read the client's offer, pick what we can serve, write
//! the answer an ICE-lite, BUNDLE-only server gives: DTLS-passive, or
//! DTLS-active when the offer is passive.
//!
//! What we serve: one H264 (packetization-mode=1) video and one Opus audio
//! m-line, bundled on one port with rtcp-mux. Anything we cannot serve is
//! either rejected in the answer (port 0: data channels, a second video) or,
//! when it makes the session useless, refused with a message naming it.

use std::fmt::Write;
use std::net::Ipv4Addr;

use gateway_ring::msg::{Codec as WireCodec, DtlsRole, MediaKind, MAX_TRACKS};
use gateway_ring::SessionId;

/// A codec line of an m-section: `a=rtpmap` plus its `a=fmtp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    pub pt: u8,
    pub name: String,
    pub clock_rate: u32,
    pub channels: Option<u8>,
    pub fmtp: String,
    /// `a=rtcp-fb` for this payload type (or `*`): `nack`, `goog-remb`, ...
    pub feedback: Vec<String>,
}

impl Codec {
    fn fmtp_param(&self, key: &str) -> Option<&str> {
        self.fmtp.split(';').find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            k.eq_ignore_ascii_case(key).then_some(v.trim())
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    pub kind: String,
    pub port: u16,
    pub proto: String,
    pub mid: Option<String>,
    pub direction: String,
    pub rtcp_mux: bool,
    pub codecs: Vec<Codec>,
    pub ice_ufrag: Option<String>,
    pub ice_pwd: Option<String>,
    pub fingerprints: Vec<(String, String)>,
    pub setup: Option<String>,
    /// `a=extmap:ID URI` of the section: (id, uri).
    pub extmaps: Vec<(u8, String)>,
}

impl MediaSection {
    /// The id the section's `a=extmap` gives header extension `uri`.
    fn extmap_id(&self, uri: &str) -> Option<u8> {
        self.extmaps
            .iter()
            .find(|(_, u)| u == uri)
            .map(|&(id, _)| id)
    }
}

/// The parts of an offer the answer depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub media: Vec<MediaSection>,
    pub bundle: Vec<String>,
    session_ice_ufrag: Option<String>,
    session_ice_pwd: Option<String>,
    session_fingerprints: Vec<(String, String)>,
    session_setup: Option<String>,
}

/// Largest offer accepted (browsers' offers are 3-8 KB).
pub const MAX_OFFER: usize = 64 * 1024;

pub fn parse(text: &str) -> Result<Offer, String> {
    if text.len() > MAX_OFFER {
        return Err(format!("offer larger than {MAX_OFFER} bytes"));
    }
    if !text.trim_start().starts_with("v=0") {
        return Err("not an SDP offer: it must start with \"v=0\"".into());
    }
    let mut offer = Offer {
        media: Vec::new(),
        bundle: Vec::new(),
        session_ice_ufrag: None,
        session_ice_pwd: None,
        session_fingerprints: Vec::new(),
        session_setup: None,
    };
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let Some((typ, value)) = line.split_once('=') else {
            return Err(format!(
                "SDP line {} is not <type>=<value>: {line:?}",
                n + 1
            ));
        };
        match typ {
            "m" => {
                let mut f = value.split_whitespace();
                let (Some(kind), Some(port), Some(proto)) = (f.next(), f.next(), f.next()) else {
                    return Err(format!("SDP line {}: malformed m= line", n + 1));
                };
                let port = port
                    .split('/')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| format!("SDP line {}: bad port in m= line", n + 1))?;
                offer.media.push(MediaSection {
                    kind: kind.to_string(),
                    port,
                    proto: proto.to_string(),
                    mid: None,
                    direction: "sendrecv".into(),
                    rtcp_mux: false,
                    codecs: f
                        .filter_map(|pt| pt.parse().ok())
                        .map(|pt| Codec {
                            pt,
                            name: String::new(),
                            clock_rate: 0,
                            channels: None,
                            fmtp: String::new(),
                            feedback: Vec::new(),
                        })
                        .collect(),
                    ice_ufrag: None,
                    ice_pwd: None,
                    fingerprints: Vec::new(),
                    setup: None,
                    extmaps: Vec::new(),
                });
            }
            "a" => {
                let (name, val) = value.split_once(':').unwrap_or((value, ""));
                attribute(&mut offer, name, val.trim());
            }
            _ => {}
        }
    }
    if offer.media.is_empty() {
        return Err("the offer has no m= lines".into());
    }
    Ok(offer)
}

fn attribute(offer: &mut Offer, name: &str, val: &str) {
    let fingerprint = || {
        val.split_once(' ')
            .map(|(h, v)| (h.to_ascii_lowercase(), v.trim().to_string()))
    };
    let Some(m) = offer.media.last_mut() else {
        match name {
            "group" => {
                if let Some(rest) = val.strip_prefix("BUNDLE") {
                    offer.bundle = rest.split_whitespace().map(str::to_string).collect();
                }
            }
            "ice-ufrag" => offer.session_ice_ufrag = Some(val.to_string()),
            "ice-pwd" => offer.session_ice_pwd = Some(val.to_string()),
            "fingerprint" => offer.session_fingerprints.extend(fingerprint()),
            "setup" => offer.session_setup = Some(val.to_string()),
            _ => {}
        }
        return;
    };
    match name {
        "mid" => m.mid = Some(val.to_string()),
        "sendrecv" | "sendonly" | "recvonly" | "inactive" => m.direction = name.to_string(),
        "rtcp-mux" => m.rtcp_mux = true,
        "ice-ufrag" => m.ice_ufrag = Some(val.to_string()),
        "ice-pwd" => m.ice_pwd = Some(val.to_string()),
        "fingerprint" => m.fingerprints.extend(fingerprint()),
        "setup" => m.setup = Some(val.to_string()),
        "extmap" => {
            // `ID[/direction] URI [attributes]`; one-byte ids are 1-14.
            let mut f = val.split_whitespace();
            let id = f
                .next()
                .and_then(|i| i.split('/').next()?.parse::<u8>().ok());
            if let (Some(id @ 1..=14), Some(uri)) = (id, f.next()) {
                m.extmaps.push((id, uri.to_string()));
            }
        }
        "rtpmap" => {
            let Some((pt, enc)) = val.split_once(' ') else {
                return;
            };
            let Ok(pt) = pt.parse::<u8>() else { return };
            let mut p = enc.split('/');
            let name = p.next().unwrap_or("").to_string();
            let clock_rate = p.next().and_then(|c| c.parse().ok()).unwrap_or(0);
            let channels = p.next().and_then(|c| c.parse().ok());
            if let Some(c) = m.codecs.iter_mut().find(|c| c.pt == pt) {
                c.name = name;
                c.clock_rate = clock_rate;
                c.channels = channels;
            }
        }
        "rtcp-fb" => {
            let Some((pt, fb)) = val.split_once(' ') else {
                return;
            };
            let fb = fb.trim().to_string();
            for c in m
                .codecs
                .iter_mut()
                .filter(|c| pt == "*" || pt.parse() == Ok(c.pt))
            {
                if c.feedback.len() < 16 {
                    c.feedback.push(fb.clone());
                }
            }
        }
        "fmtp" => {
            let Some((pt, params)) = val.split_once(' ') else {
                return;
            };
            let Ok(pt) = pt.parse::<u8>() else { return };
            if let Some(c) = m.codecs.iter_mut().find(|c| c.pt == pt) {
                c.fmtp = params.trim().to_string();
            }
        }
        _ => {}
    }
}

/// Which way the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// WHIP: the client publishes (its offer sends).
    Publish,
    /// WHEP: the client plays (its offer receives).
    Play,
}

/// One m-line we serve: its index in the offer, its kind and codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub index: usize,
    pub kind: MediaKind,
    /// The codec (its name for the ring) and the offer's line of it.
    pub wire: WireCodec,
    pub codec: Codec,
    /// Audio: the id of RFC 6464 audio levels, when offered. A publisher's
    /// feed the active speaker; a player's carry each packet's level.
    pub audio_level: Option<u8>,
    /// The transport-wide sequence number extension id, when offered; the
    /// answer accepts it with `transport-cc` feedback (a publisher's for its
    /// encoder, a player's for our estimate of its path).
    pub twcc: Option<u8>,
    /// Publish, without transport-cc: the abs-send-time extension id, when
    /// offered with `goog-remb`; the answer accepts both and we send REMB.
    /// Not taken beside transport-cc: nothing would read it.
    pub abs_send_time: Option<u8>,
    /// Video: the offer's RTX payload type for the chosen codec (`apt=`),
    /// accepted so retransmissions are told apart. A publisher's bandwidth
    /// probes then come on their own SSRC too: without RTX it pads on the
    /// media SSRC, and a lost padding packet (never resent) is a gap the
    /// bridge to RTMP waits for in vain. A player's resends come on
    /// [`gateway_ring::msg::rtx_ssrc`] of its line's SSRC.
    pub rtx: Option<Codec>,
    /// Video: every codec of the offer's line we take, best first (the
    /// first is the chosen one), each with its RTX: a WHEP line named for
    /// a publisher takes the publisher's codec if it is here
    /// ([`Chosen::prefer`]).
    pub options: Vec<(WireCodec, Codec, Option<Codec>)>,
    /// Play, video: the other codecs of `options` the line carries too
    /// (on the session's payload types), so a publisher in any of them can
    /// take it: the answer lists them after `codec`.
    pub also: Vec<(WireCodec, Codec, Option<Codec>)>,
}

/// Play: gives each video line every codec of its options whose payload
/// types agree with the session's (a BUNDLE session numbers each codec
/// once; the first line that offers a codec sets its numbers), and returns
/// the session's (payload type, RTX payload type) per codec, by
/// `WireCodec::VIDEO` order.
pub fn carry_every_codec(lines: &mut [Chosen]) -> [(u8, u8); 4] {
    let mut table = [(0u8, 0u8); 4];
    let index = |w: WireCodec| WireCodec::VIDEO.iter().position(|&c| c == w);
    let pts = |o: &(WireCodec, Codec, Option<Codec>)| (o.1.pt, o.2.as_ref().map_or(0, |r| r.pt));
    for line in lines.iter() {
        for o in &line.options {
            if let Some(i) = index(o.0) {
                if table[i].0 == 0 {
                    table[i] = pts(o);
                }
            }
        }
    }
    for line in lines.iter_mut().filter(|l| l.kind == MediaKind::Video) {
        let primary = line.wire;
        line.also = line
            .options
            .iter()
            .filter(|o| o.0 != primary && index(o.0).is_some_and(|i| table[i] == pts(o)))
            .cloned()
            .collect();
    }
    table
}

impl Chosen {
    /// Makes `wire` this line's codec if the offer's line holds it; false
    /// if it does not.
    pub fn prefer(&mut self, wire: WireCodec) -> bool {
        let Some((w, codec, rtx)) = self.options.iter().find(|o| o.0 == wire).cloned() else {
            return false;
        };
        (self.wire, self.codec, self.rtx) = (w, codec, rtx);
        true
    }
}

/// RFC 6464 client-to-mixer audio levels.
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// draft-holmer-rmcat-transport-wide-cc-extensions-01: the sender numbers
/// every packet of the transport; we feed back their arrival times.
pub const TWCC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
/// The sender's send time (24 bits, 1/2^18 s): what our receive-side
/// estimate runs on for a publisher that takes REMB instead of transport-cc.
pub const ABS_SEND_TIME_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";

/// What the dataplane needs from a negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub remote_ufrag: String,
    pub remote_fingerprint: [u8; 32],
    /// Ours, from the offer's `a=setup`; the answer's `a=setup` says it.
    pub dtls_role: DtlsRole,
    /// Publish: the first sending video and audio line. Play: every
    /// receiving line (up to `MAX_TRACKS`), one publisher's track each.
    pub tracks: Vec<Chosen>,
}

/// Where a video codec of an offer stands, best first: its place in the
/// server's preference list `prefs` (`--video-codecs`), then its rank in
/// the codec (H264: [`h264_rank`]). `None`: a codec or a profile we do not
/// take (VP9 other than profile 0, AV1 other than the main profile).
fn video_rank(c: &Codec, prefs: &[WireCodec]) -> Option<(WireCodec, usize, u8)> {
    if c.clock_rate != 90_000 {
        return None;
    }
    let wire = WireCodec::video(&c.name)?;
    let within = match wire {
        WireCodec::H264 => h264_rank(c)?,
        WireCodec::Vp9 if c.fmtp_param("profile-id").unwrap_or("0") != "0" => return None,
        WireCodec::Av1 if c.fmtp_param("profile").unwrap_or("0") != "0" => return None,
        _ => 0,
    };
    let place = prefs.iter().position(|&p| p == wire)?;
    Some((wire, place, within))
}

/// What a video line we cannot serve offers, for the error: its codecs
/// by name (and profile), once each.
fn offered_video(m: &MediaSection) -> String {
    let mut names: Vec<String> = Vec::new();
    for c in &m.codecs {
        if ["rtx", "red", "ulpfec", "flexfec-03"]
            .iter()
            .any(|n| c.name.eq_ignore_ascii_case(n))
        {
            continue;
        }
        if c.name.is_empty() {
            continue; // a payload type without its a=rtpmap
        }
        let mut name = c.name.clone();
        for param in ["packetization-mode", "profile-id", "profile"] {
            if let Some(v) = c.fmtp_param(param) {
                let _ = write!(name, " {param}={v}");
            }
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(", ")
    }
}

/// Rank of an H264 offer: constrained baseline first (every decoder and the
/// RTMP side take it), then baseline, main, high.
fn h264_rank(c: &Codec) -> Option<u8> {
    if !c.name.eq_ignore_ascii_case("H264") || c.clock_rate != 90_000 {
        return None;
    }
    // RFC 6184 §8.1: packetization-mode absent means 0 (single NAL only),
    // which cannot carry a frame larger than one packet.
    if c.fmtp_param("packetization-mode") != Some("1") {
        return None;
    }
    let plid = c.fmtp_param("profile-level-id").unwrap_or("42001f");
    let profile = plid.get(..4).unwrap_or("").to_ascii_lowercase();
    Some(match profile.as_str() {
        "42e0" => 0,
        "4200" => 1,
        "4d00" => 2,
        "6400" => 3,
        _ => 4,
    })
}

fn is_opus(c: &Codec) -> bool {
    c.name.eq_ignore_ascii_case("opus") && c.clock_rate == 48_000
}

fn parse_sha256(value: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    let mut n = 0;
    for part in value.split(':') {
        if n == 32 {
            return None;
        }
        out[n] = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 32).then_some(out)
}

/// Checks the offer and picks codecs: for video, the first of `prefs`
/// (the server's order, `--video-codecs`) the line offers. Errors name
/// what is missing.
pub fn negotiate(offer: &Offer, mode: Mode, prefs: &[WireCodec]) -> Result<Negotiated, String> {
    let media: Vec<(usize, &MediaSection)> = offer
        .media
        .iter()
        .enumerate()
        .filter(|(_, m)| m.kind == "audio" || m.kind == "video")
        .collect();
    if media.is_empty() {
        return Err("the offer has no audio or video m= line".into());
    }
    let first = media[0].1;
    let ufrag = first
        .ice_ufrag
        .clone()
        .or_else(|| offer.session_ice_ufrag.clone())
        .ok_or("the offer has no a=ice-ufrag")?;
    if first.ice_pwd.is_none() && offer.session_ice_pwd.is_none() {
        return Err("the offer has no a=ice-pwd".into());
    }
    if ufrag.len() > gateway_ring::msg::MAX_UFRAG || ufrag.is_empty() {
        return Err(format!(
            "a=ice-ufrag must be 1-{} characters",
            gateway_ring::msg::MAX_UFRAG
        ));
    }
    let fps = if first.fingerprints.is_empty() {
        &offer.session_fingerprints
    } else {
        &first.fingerprints
    };
    if fps.is_empty() {
        return Err(
            "the offer has no a=fingerprint: DTLS-SRTP needs the client's certificate fingerprint"
                .into(),
        );
    }
    let fingerprint = fps
        .iter()
        .find(|(h, _)| h == "sha-256")
        .ok_or("the offer has no a=fingerprint:sha-256 (the only hash we check)")?;
    let remote_fingerprint =
        parse_sha256(&fingerprint.1).ok_or("a=fingerprint:sha-256 is not 32 hex bytes")?;
    let setup = first
        .setup
        .as_deref()
        .or(offer.session_setup.as_deref())
        .unwrap_or("actpass");
    let dtls_role = dtls_role_for(setup)?;
    if media.len() > 1 {
        for (_, m) in &media {
            let bundled = m.mid.as_ref().is_some_and(|mid| offer.bundle.contains(mid));
            if !bundled {
                return Err(format!(
                    "the {} m= line is not in a=group:BUNDLE: this server takes all media on one port (use max-bundle)",
                    m.kind
                ));
            }
        }
    }
    let mut tracks: Vec<Chosen> = Vec::new();
    for &(index, m) in &media {
        if !m.rtcp_mux {
            return Err(format!("the {} m= line has no a=rtcp-mux", m.kind));
        }
        if !m.proto.contains("SAVPF") {
            return Err(format!(
                "the {} m= line uses {}; WebRTC needs UDP/TLS/RTP/SAVPF",
                m.kind, m.proto
            ));
        }
        let sends = m.direction == "sendrecv" || m.direction == "sendonly";
        let receives = m.direction == "sendrecv" || m.direction == "recvonly";
        let usable = match mode {
            Mode::Publish => sends,
            Mode::Play => receives,
        };
        if !usable || m.port == 0 {
            continue;
        }
        let kind = if m.kind == "video" {
            MediaKind::Video
        } else {
            MediaKind::Audio
        };
        // A publisher sends one video and one audio track; a player may ask
        // for as many lines as it wants to see publishers, up to MAX_TRACKS.
        let taken = match mode {
            Mode::Publish => tracks.iter().any(|t| t.kind == kind),
            Mode::Play => tracks.len() >= MAX_TRACKS,
        };
        if taken {
            continue;
        }
        let rtx_of = |codec: &Codec| {
            m.codecs
                .iter()
                .find(|c| {
                    c.name.eq_ignore_ascii_case("rtx")
                        && c.fmtp_param("apt").and_then(|a| a.parse::<u8>().ok()) == Some(codec.pt)
                })
                .cloned()
        };
        let mut options = Vec::new();
        let (wire, codec) = if kind == MediaKind::Video {
            let mut ranked: Vec<((WireCodec, usize, u8), &Codec)> = m
                .codecs
                .iter()
                .filter_map(|c| video_rank(c, prefs).map(|r| (r, c)))
                .collect();
            ranked.sort_by_key(|((_, place, within), _)| (*place, *within));
            for ((wire, _, _), c) in ranked {
                if !options.iter().any(|(w, _, _)| *w == wire) {
                    options.push((wire, c.clone(), rtx_of(c)));
                }
            }
            let Some((wire, codec, _)) = options.first().cloned() else {
                let takes: Vec<&str> = prefs.iter().map(|c| c.name()).collect();
                return Err(format!(
                    "the video m= line offers none of the codecs this gateway takes ({}; H264 \
                     with packetization-mode=1, VP9 with profile-id=0, AV1 with profile=0): it \
                     offers {}",
                    takes.join(", "),
                    offered_video(m)
                ));
            };
            (wire, codec)
        } else {
            let opus = m.codecs.iter().find(|c| is_opus(c)).cloned();
            (
                WireCodec::Opus,
                opus.ok_or("the audio m= line offers no opus/48000/2")?,
            )
        };
        // Audio levels both ways: a publisher's feed the active speaker, and
        // a player gets each packet's level under its own id (a browser
        // shows them in getSynchronizationSources()).
        let audio_level = match kind {
            MediaKind::Audio => m.extmap_id(AUDIO_LEVEL_URI),
            MediaKind::Video => None,
        };
        // Both ways: a publisher's feedback drives its encoder; a player's
        // drives our estimate of its path (`dataplane/src/bwe.rs`).
        let twcc = m.extmap_id(TWCC_URI);
        let remb = codec.feedback.iter().any(|f| f == "goog-remb");
        let abs_send_time = match mode {
            Mode::Publish if twcc.is_none() && remb => m.extmap_id(ABS_SEND_TIME_URI),
            _ => None,
        };
        let rtx = match kind {
            MediaKind::Video => rtx_of(&codec),
            MediaKind::Audio => None,
        };
        tracks.push(Chosen {
            index,
            kind,
            wire,
            codec,
            audio_level,
            twcc,
            abs_send_time,
            rtx,
            options,
            also: Vec::new(),
        });
    }
    if tracks.is_empty() {
        return Err(match mode {
            Mode::Publish => "no m= line sends media (WHIP offers are sendonly or sendrecv)".into(),
            Mode::Play => "no m= line receives media (WHEP offers are recvonly or sendrecv)".into(),
        });
    }
    Ok(Negotiated {
        remote_ufrag: ufrag,
        remote_fingerprint,
        dtls_role,
        tracks,
    })
}

/// Our DTLS role for the offer's `a=setup` (RFC 4145 §4.1, which RFC 8842
/// keeps for DTLS): an offer of `active` or `actpass` gets a `passive`
/// answer and we are the server, as browsers expect; an offer of
/// `passive` (FFmpeg's WHIP muxer) gets `active`, and we are the client.
fn dtls_role_for(setup: &str) -> Result<DtlsRole, String> {
    match setup {
        "actpass" | "active" => Ok(DtlsRole::Server),
        "passive" => Ok(DtlsRole::Client),
        "holdconn" => Err(
            "a=setup:holdconn: the offer holds the DTLS connection back, but media needs it now (offer actpass, active or passive)"
                .into(),
        ),
        other => Err(format!(
            "a=setup:{other:.32} is not a setup role (actpass, active or passive)"
        )),
    }
}

/// The answer's `a=setup` for our role.
fn answer_setup(role: DtlsRole) -> &'static str {
    match role {
        DtlsRole::Server => "passive",
        DtlsRole::Client => "active",
    }
}

/// Our side of the answer.
pub struct AnswerParams<'a> {
    pub mode: Mode,
    pub session: SessionId,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub ice_ufrag: &'a str,
    pub ice_pwd: &'a str,
    pub fingerprint: &'a [u8; 32],
    /// WHEP: the SSRC we send on, per negotiated track (same order).
    pub ssrcs: &'a [u32],
    /// WHEP: the participant each negotiated track is named for (its
    /// `a=msid` stream id), if any.
    pub sources: &'a [Option<String>],
}

fn fingerprint_text(fp: &[u8; 32]) -> String {
    fp.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The answer: every m-line of the offer, in order (JSEP requires it); the
/// ones we serve on our one port, the rest rejected with port 0.
pub fn answer(offer: &Offer, neg: &Negotiated, p: &AnswerParams<'_>) -> String {
    let mids: Vec<String> = neg
        .tracks
        .iter()
        .map(|t| {
            offer.media[t.index]
                .mid
                .clone()
                .unwrap_or_else(|| t.index.to_string())
        })
        .collect();
    let mut s = String::new();
    let _ = write!(
        s,
        "v=0\r\no=- {} 2 IN IP4 {ip}\r\ns=mediagw\r\nt=0 0\r\na=group:BUNDLE {}\r\na=ice-lite\r\na=msid-semantic: WMS *\r\n",
        p.session,
        mids.join(" "),
        ip = p.ip
    );
    let fp = fingerprint_text(p.fingerprint);
    for (i, m) in offer.media.iter().enumerate() {
        let Some(k) = neg.tracks.iter().position(|t| t.index == i) else {
            // Rejected: same kind and proto, port 0, the first format echoed.
            let fmt = m
                .codecs
                .first()
                .map(|c| c.pt.to_string())
                .unwrap_or_else(|| "0".into());
            let proto = if m.kind == "application" {
                m.proto.clone()
            } else {
                "UDP/TLS/RTP/SAVPF".to_string()
            };
            let _ = write!(s, "m={} 0 {proto} {fmt}\r\nc=IN IP4 0.0.0.0\r\n", m.kind);
            if let Some(mid) = &m.mid {
                let _ = write!(s, "a=mid:{mid}\r\n");
            }
            s.push_str("a=inactive\r\n");
            continue;
        };
        let codec = &neg.tracks[k].codec;
        let mid = &mids[k];
        // The line's codec, then the others it carries too (a player's).
        let mut codecs: Vec<(&Codec, Option<&Codec>)> = vec![(codec, neg.tracks[k].rtx.as_ref())];
        codecs.extend(neg.tracks[k].also.iter().map(|(_, c, r)| (c, r.as_ref())));
        let formats: String = codecs
            .iter()
            .map(|(c, r)| match r {
                Some(r) => format!(" {} {}", c.pt, r.pt),
                None => format!(" {}", c.pt),
            })
            .collect();
        let _ = write!(
            s,
            "m={kind} {port} UDP/TLS/RTP/SAVPF{formats}\r\nc=IN IP4 {ip}\r\na=mid:{mid}\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\na=fingerprint:sha-256 {fp}\r\na=setup:{setup}\r\na=rtcp-mux\r\na={dir}\r\n",
            kind = m.kind,
            port = p.port,
            ip = p.ip,
            ufrag = p.ice_ufrag,
            pwd = p.ice_pwd,
            setup = answer_setup(neg.dtls_role),
            dir = match p.mode {
                Mode::Publish => "recvonly",
                Mode::Play => "sendonly",
            },
        );
        for (codec, rtx) in &codecs {
            let channels = codec.channels.map(|c| format!("/{c}")).unwrap_or_default();
            let _ = write!(
                s,
                "a=rtpmap:{} {}/{}{channels}\r\n",
                codec.pt, codec.name, codec.clock_rate
            );
            if !codec.fmtp.is_empty() {
                let _ = write!(s, "a=fmtp:{} {}\r\n", codec.pt, codec.fmtp);
            }
            if let Some(rtx) = rtx {
                let _ = write!(
                    s,
                    "a=rtpmap:{} rtx/{}\r\na=fmtp:{} apt={}\r\n",
                    rtx.pt, rtx.clock_rate, rtx.pt, codec.pt
                );
            }
        }
        if let Some(id) = neg.tracks[k].audio_level {
            let _ = write!(s, "a=extmap:{id} {AUDIO_LEVEL_URI}\r\n");
        }
        if let Some(id) = neg.tracks[k].twcc {
            let _ = write!(s, "a=extmap:{id} {TWCC_URI}\r\n");
            let _ = write!(s, "a=rtcp-fb:{} transport-cc\r\n", codec.pt);
            // The other codecs a player's line carries, where offered.
            for (other, _) in codecs.iter().skip(1) {
                if other.feedback.iter().any(|f| f == "transport-cc") {
                    let _ = write!(s, "a=rtcp-fb:{} transport-cc\r\n", other.pt);
                }
            }
        }
        if let Some(id) = neg.tracks[k].abs_send_time {
            let _ = write!(s, "a=extmap:{id} {ABS_SEND_TIME_URI}\r\n");
            let _ = write!(s, "a=rtcp-fb:{} goog-remb\r\n", codec.pt);
        }
        if m.kind == "video" {
            // Only what the offer named for this payload type: an answer may
            // not add feedback types (RFC 4585 §4.2; FFmpeg offers `nack` alone).
            for (codec, _) in &codecs {
                let offered = |fb: &str| {
                    codec
                        .feedback
                        .iter()
                        .any(|f| f.split_whitespace().eq(fb.split_whitespace()))
                };
                for fb in ["nack", "nack pli", "ccm fir"]
                    .into_iter()
                    .filter(|fb| offered(fb))
                {
                    let _ = write!(s, "a=rtcp-fb:{} {fb}\r\n", codec.pt);
                }
            }
        }
        if p.mode == Mode::Play {
            // One stream per line: line k carries one publisher's track. A
            // line named for a participant has its name as the stream id, so
            // `ontrack` tells whose it is (and a participant's video and
            // audio lines form one MediaStream); others are `mediagw-k`.
            let ssrc = p.ssrcs.get(k).copied().unwrap_or(0);
            let stream = match p.sources.get(k).and_then(Option::as_ref) {
                Some(name) => name.clone(),
                None => format!("mediagw-{k}"),
            };
            let _ = write!(
                s,
                "a=msid:{stream} {kind}{k}\r\na=ssrc:{ssrc} cname:mediagw\r\na=ssrc:{ssrc} msid:{stream} {kind}{k}\r\n",
                kind = m.kind
            );
            if neg.tracks[k].rtx.is_some() {
                let rtx = gateway_ring::msg::rtx_ssrc(ssrc);
                let _ = write!(
                    s,
                    "a=ssrc-group:FID {ssrc} {rtx}\r\na=ssrc:{rtx} cname:mediagw\r\na=ssrc:{rtx} msid:{stream} {kind}{k}\r\n",
                    kind = m.kind
                );
            }
        }
        let _ = write!(
            s,
            "a=candidate:1 1 udp 2130706431 {ip} {port} typ host\r\na=end-of-candidates\r\n",
            ip = p.ip,
            port = p.port
        );
    }
    s
}

#[cfg(test)]
mod tests;
