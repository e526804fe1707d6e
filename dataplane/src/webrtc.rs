//! One WebRTC peer on one UDP port: ICE-lite, DTLS-SRTP keys, and its media
//! streams (sans-IO).
//!
//! Every datagram is classified by its first byte (RFC 7983) and handled:
//!
//! ```text
//! STUN  → IceLite answers a valid Binding request        → Reply: send scratch[..len] to src
//!         (the first valid one, where we are the DTLS client: start_dtls too)
//! DTLS  → only from an ICE-verified address              → Dtls: copy to the DTLS thread
//! SRTP  → publisher, after keys, from the verified peer  → Media: fan out
//! SRTCP → after keys, from the verified peer             → Rtcp(n): feedback for the router
//! ```
//!
//! The router owns the cross-session decisions (fan-out, keyframe requests,
//! NACK answers); this module owns what is private to the peer.

use std::net::SocketAddrV4;
use std::time::Instant;

use gateway_ring::msg::{Direction, DropReason, DtlsRole, MediaKind, SrtpKey, WebrtcSpec};

use crate::codec::VideoCodec;
use crate::demux::{classify, Protocol};
use crate::ice::lite::{IceLite, StunDrop};
use crate::rtcp::{ReportBlock, SenderInfo};
use crate::rtp::{is_rtcp, RtpHeader};
use crate::srtp::{SrtpContext, SrtpError};

/// What the router should do with a datagram the peer accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// Plaintext RTP now in `buf[..len]`, to fan out.
    Media {
        kind: MediaKind,
        len: usize,
        seq_no: u16,
        timestamp: u32,
        ssrc: u32,
        /// Audio: the RFC 6464 level (-dBov, 0 loudest), when negotiated.
        level: Option<u8>,
        /// Audio: packets missing just before this one.
        lost_before: u16,
    },
    /// A STUN response is in the scratch buffer: send `scratch[..len]` to
    /// the source. `start_dtls`: this was the peer's first valid check and
    /// we are its DTLS client; its address is known only now, so only now
    /// can our ClientHello go to it.
    Reply { len: usize, start_dtls: bool },
    /// A DTLS record from the verified peer: hand it to the DTLS thread.
    Dtls,
    /// Plaintext RTCP in `buf[..len]`, for the router to act on.
    Rtcp(usize),
    /// Accepted, nothing to do (a STUN indication, RTP a subscriber sent).
    Consumed,
}

/// Receive statistics of one incoming stream, for receiver reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct InStream {
    pub ssrc: u32,
    started: bool,
    base: u32,
    /// Extended highest sequence number (cycles << 16 | seq).
    max_ext: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// RFC 3550 A.8 interarrival jitter (RTP units, ×16 as the RFC's
    /// integer form keeps it), the last packet's transit time, and the
    /// stream's first arrival (time 0 of the arrival clock).
    jitter16: u64,
    transit: Option<i64>,
    first_arrival: Option<Instant>,
    /// Middle 32 bits of the last SR's NTP time and when it arrived.
    pub last_sr: Option<(u32, Instant)>,
    /// The last SR: (NTP, RTP timestamp, arrival), to derive subscribers' SRs.
    pub sr: Option<(u64, u32, Instant)>,
}

impl InStream {
    /// Counts packet `seq` of RTP time `ts` arriving at `now` (`rate`:
    /// the clock rate, for the jitter); returns how many were missing just
    /// before it (0 when it is next, late or a duplicate).
    fn on_packet(&mut self, ssrc: u32, seq: u16, ts: u32, now: Instant, rate: u32) -> u16 {
        if !self.started || self.ssrc != ssrc {
            *self = InStream {
                ssrc,
                started: true,
                base: seq as u32,
                max_ext: seq as u32,
                ..Default::default()
            };
        }
        let max = self.max_ext as u16;
        let delta = seq.wrapping_sub(max) as i16;
        let missing = if delta > 1 { (delta - 1) as u16 } else { 0 };
        if delta > 0 {
            let mut ext = (self.max_ext & 0xffff_0000) | seq as u32;
            if seq < max {
                ext = ext.wrapping_add(1 << 16);
            }
            self.max_ext = ext;
        }
        self.received = self.received.wrapping_add(1);
        // RFC 3550 A.8: J += (|D| - J) / 16, D the change in transit time.
        let first = *self.first_arrival.get_or_insert(now);
        let arrival = (now.saturating_duration_since(first).as_micros() as u64 * rate as u64
            / 1_000_000) as u32;
        let transit = arrival.wrapping_sub(ts) as i32 as i64;
        if let Some(prev) = self.transit {
            let d = (transit - prev).unsigned_abs();
            self.jitter16 = self.jitter16 + d.min(1 << 24) - ((self.jitter16 + 8) >> 4);
        }
        self.transit = Some(transit);
        missing
    }

    /// The interarrival jitter, in RTP units.
    pub fn jitter(&self) -> u32 {
        (self.jitter16 >> 4) as u32
    }

    /// RFC 3550 §6.4.1 / Appendix A.3 report block for this stream.
    pub fn report(&mut self, now: Instant) -> Option<ReportBlock> {
        if !self.started {
            return None;
        }
        let expected = self.max_ext.wrapping_sub(self.base).wrapping_add(1);
        let lost = expected.saturating_sub(self.received);
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = if expected_interval == 0 {
            0
        } else {
            ((lost_interval as u64 * 256) / expected_interval as u64).min(255) as u8
        };
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => {
                let d = now.saturating_duration_since(at).as_secs_f64();
                (lsr, (d * 65536.0) as u32)
            }
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc: self.ssrc,
            fraction_lost,
            cumulative_lost: lost,
            highest_seq: self.max_ext,
            jitter: self.jitter(),
            lsr,
            dlsr,
        })
    }
}

pub struct Peer {
    pub spec: WebrtcSpec,
    pub ice: IceLite,
    pub created: Instant,
    rx: Option<SrtpContext>,
    tx: Option<SrtpContext>,
    /// Its video line's codec, if it has one.
    pub video_codec: Option<VideoCodec>,
    /// Publisher: the incoming streams.
    pub video_in: InStream,
    pub audio_in: InStream,
    /// Publisher: when we last asked it for a keyframe.
    pub last_keyframe_request: Option<Instant>,
    /// When we last sent it an RTCP report.
    pub last_report: Option<Instant>,
    /// Publisher: what its congestion controller is told, if anything.
    pub feedback: Option<Box<Feedback>>,
}

/// The congestion control of a peer's path, one kind per peer, chosen by
/// its offer. A publisher: transport-cc feedback if offered; else REMB if
/// it offered `goog-remb` and abs-send-time; else none. A player: our
/// send-side estimate, if it offered transport-cc.
// Boxed as a whole, one per peer: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Feedback {
    /// Its packets' arrival times: its own estimator runs on them.
    Twcc(crate::twcc::Recorder),
    /// Our receive-side estimate of its path, as a bitrate.
    Remb(crate::remb::Estimator),
    /// Player: what we send it numbered, and the estimate its feedback gives.
    SendSide(crate::bwe::SendSide),
}

impl Peer {
    pub fn new(spec: WebrtcSpec, now: Instant) -> Peer {
        let ice = IceLite::new(&spec.ice_ufrag, &spec.ice_pwd, Some(&spec.remote_ufrag));
        let feedback = match spec.direction {
            Direction::Publish if spec.twcc_id() != 0 => {
                Some(Box::new(Feedback::Twcc(crate::twcc::Recorder::new(now))))
            }
            Direction::Publish if spec.abs_send_time_id() != 0 => {
                Some(Box::new(Feedback::Remb(crate::remb::Estimator::new(now))))
            }
            Direction::Subscribe if spec.twcc_id() != 0 => {
                Some(Box::new(Feedback::SendSide(crate::bwe::SendSide::new(now))))
            }
            _ => None,
        };
        Peer {
            video_codec: spec.video_codec().and_then(VideoCodec::of_wire),
            feedback,
            spec,
            ice,
            created: now,
            rx: None,
            tx: None,
            video_in: InStream::default(),
            audio_in: InStream::default(),
            last_keyframe_request: None,
            last_report: None,
        }
    }

    pub fn is_publisher(&self) -> bool {
        self.spec.direction == Direction::Publish
    }

    /// DTLS finished: from now on media flows.
    pub fn install_keys(&mut self, rx: &SrtpKey, tx: &SrtpKey) {
        self.rx = Some(SrtpContext::new(rx));
        self.tx = Some(SrtpContext::new(tx));
    }

    pub fn connected(&self) -> bool {
        self.tx.is_some()
    }

    /// Where media for this peer goes, once it can be sent.
    pub fn destination(&self) -> Option<SocketAddrV4> {
        if self.tx.is_some() {
            self.ice.remote()
        } else {
            None
        }
    }

    /// Sends RTP `buf[..len]` to this player: writes its own header
    /// extensions (`level`: an audio level's id and value; our
    /// transport-wide sequence number, if it offered transport-cc), then
    /// protects it; returns the wire length. `buf` has room after the
    /// packet for them and SRTP's trailer (a packet without it goes without
    /// them). Every packet a player gets passes here: forwarded, resent,
    /// replayed, so its estimate counts all it is sent.
    pub fn protect_rtp(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
        level: Option<(u8, u8)>,
    ) -> Result<usize, SrtpError> {
        let twcc = self.transport_seq(now, len);
        let len = if level.is_some() || twcc.is_some() {
            let (level_id, level) = level.map_or((0, [0]), |(id, l)| (id, [l & 0x7f]));
            let (twcc_id, seq) = twcc.map_or((0, [0; 2]), |(id, s)| (id, s.to_be_bytes()));
            let elements: [(u8, &[u8]); 2] = [(level_id, &level), (twcc_id, &seq)];
            let room = buf.len().saturating_sub(crate::srtp::MAX_TRAILER);
            crate::rtp::write_extensions(&mut buf[..room], len, &elements)
        } else {
            len
        };
        self.tx
            .as_mut()
            .ok_or(SrtpError::Malformed)?
            .protect_rtp(buf, len)
    }

    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        self.tx
            .as_mut()
            .ok_or(SrtpError::Malformed)?
            .protect_rtcp(buf, len)
    }

    /// Our SSRC for the RTCP we originate towards this peer.
    pub fn rtcp_ssrc(&self) -> u32 {
        (self.spec.session.get() as u32) | 1
    }

    pub fn on_datagram(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        buf: &mut [u8],
        scratch: &mut [u8],
    ) -> Result<PeerEvent, DropReason> {
        match classify(buf) {
            Protocol::Stun => {
                // Only a valid check gives the peer an address, and it is
                // never taken away: none before means this is the first.
                let first_check = self.ice.remote().is_none();
                match self.ice.handle_stun(now, src, buf, scratch) {
                    Ok(len) => Ok(PeerEvent::Reply {
                        len,
                        start_dtls: first_check && self.spec.dtls_role == DtlsRole::Client,
                    }),
                    Err(StunDrop::NotARequest) => Ok(PeerEvent::Consumed),
                    Err(
                        StunDrop::WrongUser | StunDrop::BadIntegrity | StunDrop::BadFingerprint,
                    ) => Err(DropReason::Ice),
                    Err(StunDrop::Malformed | StunDrop::NoRoom) => Err(DropReason::Malformed),
                }
            }
            Protocol::Dtls => {
                if self.ice.is_verified(src) {
                    Ok(PeerEvent::Dtls)
                } else {
                    Err(DropReason::UnknownSource)
                }
            }
            Protocol::Rtp => {
                if !self.ice.is_verified(src) {
                    return Err(DropReason::UnknownSource);
                }
                let Some(rx) = self.rx.as_mut() else {
                    return Err(DropReason::NotReady);
                };
                let srtp_err = |e: SrtpError| match e {
                    SrtpError::Auth => DropReason::Auth,
                    SrtpError::Replay => DropReason::Replay,
                    SrtpError::Malformed | SrtpError::NoRoom => DropReason::Malformed,
                };
                if is_rtcp(buf) {
                    let n = rx.unprotect_rtcp(buf).map_err(srtp_err)?;
                    return Ok(PeerEvent::Rtcp(n));
                }
                let mut len = rx.unprotect_rtp(buf).map_err(srtp_err)?;
                if !self.is_publisher() {
                    return Ok(PeerEvent::Consumed);
                }
                let mut h = RtpHeader::parse(&buf[..len]).map_err(|_| DropReason::Malformed)?;
                let rtx = h.pt != 0 && h.pt == self.spec.rtx_pt();
                let kind = if rtx || (h.pt == self.spec.pt(MediaKind::Video) && h.pt != 0) {
                    MediaKind::Video
                } else if h.pt == self.spec.pt(MediaKind::Audio) && h.pt != 0 {
                    MediaKind::Audio
                } else {
                    return Err(DropReason::PayloadType);
                };
                let level = match kind {
                    MediaKind::Audio => {
                        crate::rtp::audio_level(&buf[..h.len], self.spec.audio_level_id())
                    }
                    MediaKind::Video => None,
                };
                match self.feedback.as_deref_mut() {
                    Some(Feedback::Twcc(r)) => {
                        if let Some(seq) = crate::twcc::sequence(&buf[..h.len], self.spec.twcc_id())
                        {
                            r.record(seq, now);
                        }
                    }
                    Some(Feedback::Remb(e)) => {
                        let id = self.spec.abs_send_time_id();
                        if let Some(sent) = crate::remb::send_time(&buf[..h.len], id) {
                            e.on_packet(now, sent, len);
                        }
                    }
                    Some(Feedback::SendSide(_)) | None => {}
                }
                if rtx {
                    // Counted above for congestion control, now made the
                    // packet it resends (or dropped: a padding-only probe).
                    match self.unwrap_rtx(buf, len, &h) {
                        Some(n) => len = n,
                        None => return Ok(PeerEvent::Consumed),
                    }
                    h = RtpHeader::parse(&buf[..len]).map_err(|_| DropReason::Malformed)?;
                }
                strip_extensions(&mut buf[..h.len]);
                let mut lost_before = 0;
                match kind {
                    MediaKind::Video => {
                        self.video_in
                            .on_packet(h.ssrc, h.seq_no, h.timestamp, now, 90_000);
                    }
                    MediaKind::Audio => {
                        lost_before =
                            self.audio_in
                                .on_packet(h.ssrc, h.seq_no, h.timestamp, now, 48_000)
                    }
                }
                Ok(PeerEvent::Media {
                    kind,
                    len,
                    seq_no: h.seq_no,
                    timestamp: h.timestamp,
                    ssrc: h.ssrc,
                    level,
                    lost_before,
                })
            }
            Protocol::Other => Err(DropReason::Malformed),
        }
    }

    /// Turns RTX packet `buf[..len]` (RFC 4588: the original sequence
    /// number, then the original payload) back into the video packet it
    /// resends, in place: its sequence number, the video payload type and
    /// SSRC. `None` for a padding-only packet (a bandwidth probe) or before
    /// the video itself has started.
    fn unwrap_rtx(&self, buf: &mut [u8], len: usize, h: &RtpHeader) -> Option<usize> {
        let padding = if buf[0] & 0x20 != 0 {
            buf[len - 1] as usize
        } else {
            0
        };
        let end = len.checked_sub(padding)?;
        if !self.video_in.started || end < h.len + 2 {
            return None;
        }
        let osn = u16::from_be_bytes([buf[h.len], buf[h.len + 1]]);
        buf.copy_within(h.len + 2..len, h.len);
        let pt = self.spec.pt(MediaKind::Video);
        RtpHeader::rewrite(
            &mut buf[..len - 2],
            pt,
            osn,
            h.timestamp,
            self.video_in.ssrc,
        );
        Some(len - 2)
    }

    /// Whether congestion feedback is due (transport-cc every 100 ms while
    /// packets come, REMB on a drop or every second).
    pub fn feedback_due(&self, now: Instant) -> bool {
        match self.feedback.as_deref() {
            Some(Feedback::Twcc(r)) => r.due(now),
            Some(Feedback::Remb(e)) => e.due(now),
            Some(Feedback::SendSide(_)) | None => false,
        }
    }

    /// Player: the transport-wide sequence number of a packet of `size`
    /// bytes sent to it now, and the extension id to write it under
    /// (`None` if it did not offer transport-cc).
    fn transport_seq(&mut self, now: Instant, size: usize) -> Option<(u8, u16)> {
        match self.feedback.as_deref_mut() {
            Some(Feedback::SendSide(b)) => Some((self.spec.twcc_id(), b.on_sent(now, size))),
            _ => None,
        }
    }

    /// Player: the transport-cc feedback in RTCP compound `rtcp` (plain).
    /// Returns how many of them did not parse.
    pub fn on_player_rtcp(&mut self, now: Instant, rtcp: &[u8]) -> u64 {
        let Some(Feedback::SendSide(b)) = self.feedback.as_deref_mut() else {
            return 0;
        };
        let before = b.malformed;
        for packet in crate::rtcp::transport_feedbacks(rtcp) {
            b.on_feedback(now, packet);
        }
        b.malformed - before
    }

    /// Player: whether we estimate its path (it offered transport-cc), so
    /// its video lines are gated by the estimate.
    pub fn estimates(&self) -> bool {
        matches!(self.feedback.as_deref(), Some(Feedback::SendSide(_)))
    }

    /// Player: what to do with a video packet of `size` bytes offered to
    /// it now on its line of priority `rank` (0 first), by its estimate;
    /// its video flows if it gave us no transport-cc.
    pub fn video(&mut self, now: Instant, rank: usize, size: usize) -> crate::bwe::Video {
        match self.feedback.as_deref_mut() {
            Some(Feedback::SendSide(b)) => b.video(now, rank, size),
            _ => crate::bwe::Video::Flow,
        }
    }

    /// Player: resends it may be sent per second, of the operator's
    /// `limit` (by its estimate, if it gave us transport-cc).
    pub fn resend_rate(&self, limit: u32) -> u32 {
        match self.feedback.as_deref() {
            Some(Feedback::SendSide(b)) => b.resend_rate(limit),
            _ => limit,
        }
    }

    /// Player: times its video paused (its path could not take it).
    pub fn video_pauses(&self) -> u64 {
        match self.feedback.as_deref() {
            Some(Feedback::SendSide(b)) => b.pauses,
            _ => 0,
        }
    }

    /// Player: the estimate of its path (bit/s), once there is one.
    pub fn estimate(&self) -> Option<u32> {
        match self.feedback.as_deref() {
            Some(Feedback::SendSide(b)) => b.estimate(),
            _ => None,
        }
    }

    /// The congestion feedback due now (plaintext RTCP in `out`, 0 if none).
    pub fn write_feedback(&mut self, now: Instant, out: &mut [u8]) -> usize {
        let ours = self.rtcp_ssrc();
        let (video, audio) = (self.video_in.ssrc, self.audio_in.ssrc);
        match self.feedback.as_deref_mut() {
            Some(Feedback::Twcc(r)) => r.feedback(now, ours, video.max(audio), out),
            Some(Feedback::Remb(e)) => {
                let (both, one) = ([video, audio], [video.max(audio)]);
                let ssrcs: &[u32] = if video != 0 && audio != 0 {
                    &both
                } else {
                    &one
                };
                e.write_remb(now, ours, ssrcs, out)
            }
            Some(Feedback::SendSide(_)) | None => 0,
        }
    }

    /// A sender report from this publisher: kept for our receiver reports'
    /// LSR/DLSR and to derive its subscribers' sender reports.
    pub fn note_sender_report(&mut self, now: Instant, sr: &SenderInfo) {
        for s in [&mut self.video_in, &mut self.audio_in] {
            if s.started && s.ssrc == sr.ssrc {
                s.last_sr = Some(((sr.ntp >> 16) as u32, now));
                s.sr = Some((sr.ntp, sr.rtp_ts, now));
            }
        }
    }
}

/// Blanks the RTP header extension in place (RFC 8285: zero bytes are
/// padding). The publisher's extension IDs mean nothing to a subscriber that
/// negotiated its own; subscribers demultiplex by the SSRCs our answer
/// announced. Keeps the length, so forwarding stays a single copy.
fn strip_extensions(header: &mut [u8]) {
    if header.len() < 12 || header[0] & 0x10 == 0 {
        return;
    }
    let at = 12 + 4 * (header[0] & 0x0f) as usize;
    if header.len() < at + 4 {
        return;
    }
    header[at + 4..].fill(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_bytes_become_padding() {
        let mut h = vec![
            0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0xbe, 0xde, 0, 1, 0x10, 0xff, 0x22, 7,
        ];
        strip_extensions(&mut h);
        assert_eq!(&h[12..16], &[0xbe, 0xde, 0, 1]);
        assert_eq!(&h[16..], &[0, 0, 0, 0]);
        let mut plain = vec![0x80, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        strip_extensions(&mut plain);
        assert_eq!(plain[0], 0x80);
    }

    /// How many packets were missing just before each one: across the
    /// wrap; 0 for the next one, a late one and a duplicate.
    #[test]
    fn streams_count_what_is_missing_before_each_packet() {
        let t0 = Instant::now();
        let mut s = InStream::default();
        assert_eq!(s.on_packet(7, 65534, 0, t0, 90_000), 0);
        assert_eq!(s.on_packet(7, 65535, 0, t0, 90_000), 0);
        assert_eq!(s.on_packet(7, 2, 0, t0, 90_000), 2, "0 and 1 missing");
        assert_eq!(s.on_packet(7, 1, 0, t0, 90_000), 0, "late");
        assert_eq!(s.on_packet(7, 2, 0, t0, 90_000), 0, "duplicate");
        assert_eq!(s.on_packet(7, 3, 0, t0, 90_000), 0);
        assert_eq!(
            s.on_packet(9, 100, 0, t0, 90_000),
            0,
            "a new stream starts afresh"
        );
    }

    /// RFC 3550 A.8 jitter: packets spaced as their RTP times say have
    /// none; packets alternately on time and 20 ms late change their
    /// transit by 20 ms each time, and the jitter converges to that (1800
    /// ticks at 90 kHz), shown in the report.
    #[test]
    fn jitter_follows_arrival_spread() {
        let t0 = Instant::now();
        let mut s = InStream::default();
        for i in 0..100u32 {
            let at = t0 + std::time::Duration::from_millis(i as u64 * 33);
            s.on_packet(1, i as u16, i * 2970, at, 90_000);
        }
        assert!(s.jitter() <= 5, "steady: {}", s.jitter());
        let mut s = InStream::default();
        for i in 0..400u32 {
            let wobble = if i % 2 == 0 { 0 } else { 20 };
            let at = t0 + std::time::Duration::from_millis(i as u64 * 33 + wobble);
            s.on_packet(1, i as u16, i * 2970, at, 90_000);
        }
        // |D| = 20 ms = 1800 ticks every packet: J converges to it.
        assert!((1700..=1850).contains(&s.jitter()), "{}", s.jitter());
        assert_eq!(s.report(t0).unwrap().jitter, s.jitter());
    }

    #[test]
    fn receiver_report_counts_loss_across_wrap() {
        let mut s = InStream::default();
        let t = Instant::now();
        for seq in [65533u16, 65534, 0, 1, 3] {
            s.on_packet(9, seq, 0, t, 90_000);
        }
        let b = s.report(t).unwrap();
        assert_eq!(b.highest_seq, (1 << 16) | 3);
        // 65533..=65535 and 0..=3 is 7 expected, 5 received.
        assert_eq!(b.cumulative_lost, 2);
        assert_eq!(b.fraction_lost, (2 * 256 / 7) as u8);
        let b = s.report(t).unwrap();
        assert_eq!(b.fraction_lost, 0, "nothing new since the last report");
    }
}
