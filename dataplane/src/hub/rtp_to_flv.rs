//! The bridge RTP → FLV ([`Bridge`]): a WebRTC or RTP publisher's video
//! through a reorder buffer (gaps NACKed) and its codec's depacketizer
//! (H264 straight into FLV tags; VP8, VP9 and AV1 as whole frames to the
//! shard's re-encode thread, back as H264 tags, up to
//! [`Hub::video_transcodes`] streams at once), and its Opus as AAC from
//! the transcoder, placed on its stream's FLV
//! timeline (an [`Anchor`] per RTP stream, the audio's lined up with the
//! video's by the sender reports) for the stream's RTMP and HTTP-FLV
//! players and programs.

use std::time::Instant;

use bytes::Bytes;

use super::timers::Timer;
use super::Hub;
use gateway_ring::RoomId;

use crate::codec::{Depacketizer, Out, VideoCodec};
use crate::media::Source;
use crate::output::{Note, Output, Outputs};
use crate::participants::{ParticipantId, Participants};
use crate::reorder::Reorder;
use crate::rtmp::conn::{types, Media};
use crate::transcode::Job;

/// RTP video → FLV video tags for one participant's stream.
pub(super) struct Bridge {
    /// Packets back in order (gaps NACKed and waited for) before the depacketizer.
    reorder: Reorder,
    /// Made at the first video packet (of each publisher), for its codec
    /// (none: a codec FLV does not carry, past the shard's transcodes).
    depack: Option<Depacketizer>,
    /// The codec it was made for, and whether its frames go to the
    /// re-encode thread (numbered: the next one's number).
    codec: Option<VideoCodec>,
    pub(super) transcodes: bool,
    coded: u32,
    /// A publisher refused a transcode is looked at again from then.
    recheck_at: Instant,
    /// FLV time 0.
    epoch: Instant,
    pub(super) video: Option<Anchor>,
    audio: Option<Anchor>,
    /// The publisher's latest RTCP sender reports (NTP, RTP time) per stream.
    video_sr: Option<(u64, u32)>,
    audio_sr: Option<(u64, u32)>,
    /// Audio waits (as AAC tags, with their RTP time) until its anchor is
    /// lined up with the video's by the sender reports, or [`ALIGN_WAIT`].
    audio_aligned: bool,
    held: Vec<(u32, Vec<Vec<u8>>)>,
    /// FLV time of the next AAC frame from the transcoder.
    aac_ms: Option<f64>,
}

impl Bridge {
    fn new(now: Instant) -> Bridge {
        Bridge {
            reorder: Reorder::default(),
            depack: None,
            codec: None,
            transcodes: false,
            coded: 0,
            recheck_at: now,
            // A second of room before the first packet, so an audio anchor
            // moved earlier than the video's stays on the timeline.
            epoch: now
                .checked_sub(std::time::Duration::from_secs(1))
                .unwrap_or(now),
            video: None,
            audio: None,
            video_sr: None,
            audio_sr: None,
            audio_aligned: false,
            held: Vec::new(),
            aac_ms: None,
        }
    }

    /// Lines the audio anchor up with the video's by the sender reports
    /// (RFC 3550 §6.4.1: both map RTP time to the sender's one NTP clock),
    /// or gives up waiting after [`ALIGN_WAIT`] and keeps arrival order.
    fn align_audio(&mut self, now: Instant) {
        if self.audio_aligned {
            return;
        }
        let Some(a) = self.audio.as_mut() else { return };
        if let (Some(v), Some(vsr), Some(asr)) = (self.video, self.video_sr, self.audio_sr) {
            let d = capture_ms(asr, a.first_ts, a.ticks_per_ms)
                - capture_ms(vsr, v.first_ts, v.ticks_per_ms);
            a.first_ms = (v.first_ms as i64 + d).max(0) as u32;
            self.audio_aligned = true;
        } else if now.saturating_duration_since(a.created) >= ALIGN_WAIT {
            self.audio_aligned = true;
        }
    }

    /// Its earliest deadline: the reorder buffer's, or the end of
    /// [`ALIGN_WAIT`] while audio is held unaligned.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let align = self
            .audio
            .filter(|_| !self.audio_aligned && !self.held.is_empty())
            .map(|a| a.created + ALIGN_WAIT);
        match (self.reorder.poll_timeout(), align) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// How often a publisher refused a transcode (the shard was full) is
/// looked at again.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// The bridged AAC clock behind the publisher's RTP time by more than this
/// (beyond the encoder's delay) jumps ahead.
const AAC_RESYNC_MS: f64 = 150.0;

/// Longest audio waits for sender reports before it is placed by arrival.
pub const ALIGN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Milliseconds of a 64-bit NTP time.
fn ntp_ms(ntp: u64) -> i64 {
    ((ntp >> 32) * 1000 + (((ntp & 0xffff_ffff) * 1000) >> 32)) as i64
}

/// NTP milliseconds of RTP time `ts`, from a sender report of the stream.
fn capture_ms(sr: (u64, u32), ts: u32, ticks_per_ms: u32) -> i64 {
    ntp_ms(sr.0) + (ts.wrapping_sub(sr.1) as i32 as i64) / ticks_per_ms as i64
}

/// Where one RTP stream sits on the FLV timeline: its first packet's RTP
/// time at its arrival time. The audio anchor is then moved to where the
/// publisher's RTCP sender reports say it was captured relative to the video.
#[derive(Clone, Copy)]
pub(super) struct Anchor {
    pub(super) source: (Source, u32),
    first_ts: u32,
    first_ms: u32,
    ticks_per_ms: u32,
    created: Instant,
}

impl Anchor {
    fn ms(&self, ts: u32) -> u32 {
        self.first_ms
            .wrapping_add(ts.wrapping_sub(self.first_ts) / self.ticks_per_ms)
    }
}

/// The anchor of `source` in `slot`, made afresh if the source changed;
/// true if it did.
fn anchor(
    slot: &mut Option<Anchor>,
    epoch: Instant,
    now: Instant,
    source: (Source, u32),
    ts: u32,
    ticks_per_ms: u32,
) -> (Anchor, bool) {
    match slot {
        Some(a) if a.source == source => (*a, false),
        _ => {
            let a = Anchor {
                source,
                first_ts: ts,
                first_ms: now.saturating_duration_since(epoch).as_millis() as u32,
                ticks_per_ms,
                created: now,
            };
            *slot = Some(a);
            (a, true)
        }
    }
}

/// What bridging one RTP video packet to RTMP asks of the shard.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Bridged {
    /// Data was lost (or the source changed): ask the publisher for a keyframe.
    pub need_keyframe: bool,
    /// SPS/PPS NAL units refused as unusable: count them against the publisher.
    pub bad_parameter_sets: u32,
    /// The reorder buffer: gaps filled, gaps given up on.
    pub gaps_filled: u64,
    pub gaps_given_up: u64,
}

impl Hub {
    /// Whether RTP video of participant `pid` should be bridged to RTMP:
    /// its stream has players or programs watching it (an idle program may
    /// choose `pid` now), and no RTMP client publishes as `pid`.
    pub fn wants_rtp(&mut self, now: Instant, pid: ParticipantId, parts: &Participants) -> bool {
        if let Some(s) = self.streams.get(&pid) {
            return s.publisher.is_none();
        }
        // Idle programs (nobody to show) look at the publishers at most
        // every IDLE_CHOOSE_EVERY, all rooms at once: not a scan at every
        // packet of a publisher nobody plays over RTMP. A packet before
        // then has them look then (a deadline), not at a later packet.
        if self.next_idle_choose.is_some_and(|t| now < t) {
            self.idle_choose_wanted = true;
            return false;
        }
        self.choose_idle(now, parts);
        self.streams.contains_key(&pid)
    }

    /// Every idle program (nobody to show) looks at its room's publishers.
    pub(super) fn choose_idle(&mut self, now: Instant, parts: &Participants) {
        self.next_idle_choose = Some(now + IDLE_CHOOSE_EVERY);
        self.idle_choose_wanted = false;
        let mut idle: Vec<RoomId> = self
            .programs
            .values()
            .filter(|p| p.source.is_none() && p.pending.is_none())
            .map(|p| p.room)
            .collect();
        idle.sort_unstable();
        idle.dedup();
        let mut actions = Outputs::default();
        for r in idle {
            self.choose_all(now, r, parts, &mut actions);
        }
        self.out.append(&mut actions);
    }

    /// One RTP video packet (in `codec`) of participant `pid`'s publisher
    /// (`source` = the publisher and its SSRC): what the publisher must be
    /// told or counted for.
    #[allow(clippy::too_many_arguments)]
    pub fn on_rtp_video(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        codec: VideoCodec,
        source: (Source, u32),
        sr: Option<(u64, u32)>,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: &[u8],
        actions: &mut Outputs,
    ) -> Bridged {
        let mut bridged = Bridged::default();
        let Some(s) = self.streams.get_mut(&pid) else {
            return bridged;
        };
        if s.publisher.is_some() {
            return bridged;
        }
        // A transcode holds one of the shard's `--video-transcodes` and a
        // share of its re-encode thread: only while someone watches the
        // stream (a player, a program, another shard). When the last one
        // goes, its slot is given back and its re-encoder reset; a refused
        // publisher is looked at again at its keyframes (a slot may be free).
        let watched = !s.players.is_empty() || !s.watchers.is_empty() || s.relays != 0;
        if codec.flv().is_none() && !watched {
            if let Some(b) = s.bridge.as_mut().filter(|b| b.transcodes) {
                (b.transcodes, b.depack, b.codec) = (false, None, None);
                self.out.push(Output::Transcode {
                    job: Job::Reset { stream: pid },
                    from: None,
                });
            }
            return bridged;
        }
        let refused = s.bridge.as_ref().is_some_and(|b| b.depack.is_none());
        let changed = s
            .bridge
            .as_ref()
            .is_none_or(|b| b.codec != Some(codec) || b.video.is_none_or(|a| a.source != source));
        // A refused publisher is looked at again every RECHECK (a slot
        // may have been given back): a lookup over the shard's streams, not
        // one per packet.
        let again = !changed && refused && s.bridge.as_ref().is_some_and(|b| now >= b.recheck_at);
        let fresh = changed || again;
        // A codec FLV does not carry is transcoded, while the shard has room
        // (looked up again then: a new publisher, not a packet).
        let mut transcodes = false;
        let s = if fresh && codec.flv().is_none() {
            transcodes = self.may_transcode(pid, codec, source.0);
            match self.streams.get_mut(&pid) {
                Some(s) => s,
                None => return bridged,
            }
        } else {
            s
        };
        let b = s.bridge.get_or_insert_with(|| Bridge::new(now));
        let due = b.poll_timeout();
        let (a, _) = anchor(&mut b.video, b.epoch, now, source, ts, 90);
        if sr.is_some() {
            b.video_sr = sr;
        }
        if fresh {
            // A new publisher session (or SSRC, or codec) of this
            // participant: a fresh depacketizer waiting for its first
            // keyframe, on the same timeline.
            bridged.need_keyframe = codec.flv().is_some() || transcodes;
            b.recheck_at = now + RECHECK;
            b.codec = Some(codec);
            b.transcodes = transcodes;
            b.depack = (codec.flv().is_some() || transcodes).then(|| codec.depacketizer());
            b.reorder = Reorder::default();
        }
        if b.depack.is_none() {
            return Bridged::default(); // not bridged: nothing to repair
        }
        let mut out = Vec::new();
        let mut nacks = Vec::new();
        let Bridge {
            reorder, depack, ..
        } = &mut *b;
        let before = (reorder.filled, reorder.given_up);
        reorder.push(now, seq, ts, marker, payload, &mut nacks, |s, t, m, p| {
            if let Some(d) = depack {
                d.push(s, t, m, p, &mut out)
            }
        });
        bridged.gaps_filled = reorder.filled - before.0;
        bridged.gaps_given_up = reorder.given_up - before.1;
        // Only a deadline that changed is scheduled: no heap work per packet.
        let next = b.poll_timeout();
        if next != due {
            self.schedule(Timer::Bridge(pid), next);
        }
        self.depacketized(now, pid, source.0, a, ts, out, nacks, &mut bridged, actions);
        bridged
    }

    /// Whether participant `pid`'s video in `codec` (FLV does not carry
    /// it) may be transcoded for its RTMP players: under the shard's
    /// [`Hub::video_transcodes`]. When not, its publisher `source` is told
    /// why, once per codec, and its players get no picture.
    fn may_transcode(&mut self, pid: ParticipantId, codec: VideoCodec, source: Source) -> bool {
        if self.transcoding(pid) < self.video_transcodes as usize {
            return true;
        }
        let Some(session) = source.session() else {
            return false;
        };
        if !self.not_bridged(pid, codec) {
            return false;
        }
        let why = match self.video_transcodes {
            0 if !cfg!(feature = "reencode") => {
                "this dataplane was built without the `reencode` feature".to_string()
            }
            0 => "--video-transcodes is 0".to_string(),
            n => format!("the shard already transcodes {n}, --video-transcodes"),
        };
        let what = format!(
            "video {} is not transcoded to H264 for RTMP and HTTP-FLV players ({why}): \
             they get no picture of it (audio only)",
            codec.name()
        );
        tracing::info!(%session, "{what}");
        self.out
            .event(gateway_ring::msg::Event::MediaWarning { session, what });
        false
    }

    /// Streams but `pid`'s whose video the shard transcodes now, both ways
    /// (a WebRTC publisher's VP8/VP9/AV1 for RTMP players, an E-RTMP push
    /// for WebRTC players): what `--video-transcodes` bounds.
    pub(super) fn transcoding(&self, pid: ParticipantId) -> usize {
        let transcodes = |s: &super::streams::Stream| {
            s.bridge.as_ref().is_some_and(|b| b.transcodes)
                || s.rtp.as_ref().is_some_and(|r| r.transcode == Some(true))
        };
        self.streams
            .iter()
            .filter(|(p, s)| **p != pid && transcodes(s))
            .count()
    }

    /// H264 FLV tag bodies the re-encode thread made of participant
    /// `pid`'s frames ([`Out::Coded`]), each at its FLV time: to the
    /// stream's players, as a depacketizer's are. Dropped if the stream no
    /// longer transcodes (its publisher changed while they were made).
    pub fn on_transcoded(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        tags: Vec<(u32, Vec<u8>)>,
        actions: &mut Outputs,
    ) {
        let transcodes = self.streams.get(&pid).is_some_and(|s| {
            s.publisher.is_none() && s.bridge.as_ref().is_some_and(|b| b.transcodes)
        });
        if transcodes {
            self.deliver_video(now, pid, tags, actions);
        }
    }

    /// The publisher of `pid`'s transcoded video, to ask for a keyframe
    /// (the re-encode thread lost its place).
    pub fn transcoded_source(&self, pid: ParticipantId) -> Option<Source> {
        let b = self.streams.get(&pid)?.bridge.as_ref()?;
        b.video.filter(|_| b.transcodes).map(|a| a.source.0)
    }

    /// What the depacketizer made of `pid`'s video (`out`) and what its
    /// reorder buffer asked to be resent (`nacks`, of publisher `source`):
    /// frames on the FLV timeline of anchor `a` (a configuration at RTP
    /// time `config_ts`) to the stream's players, or whole frames to the
    /// re-encode thread; the rest in `bridged`.
    #[allow(clippy::too_many_arguments)]
    fn depacketized(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        source: Source,
        a: Anchor,
        config_ts: u32,
        out: Vec<Out>,
        nacks: Vec<u16>,
        bridged: &mut Bridged,
        actions: &mut Outputs,
    ) {
        for seq in nacks {
            self.out.note(Note::Nack { source, seq });
        }
        let mut media = Vec::new();
        for o in out {
            match o {
                Out::NeedKeyframe => bridged.need_keyframe = true,
                Out::BadParameterSet => bridged.bad_parameter_sets += 1,
                Out::Config(body) => media.push((a.ms(config_ts), body)),
                Out::Frame { rtp_ts, body, .. } => media.push((a.ms(rtp_ts), body)),
                Out::Coded { key, rtp_ts, frame } => {
                    let Some(b) = self.streams.get_mut(&pid).and_then(|s| s.bridge.as_mut()) else {
                        continue;
                    };
                    let (Some(codec), n) = (b.codec, b.coded) else {
                        continue;
                    };
                    b.coded = n.wrapping_add(1);
                    let job = Job::Transcode {
                        stream: pid,
                        codec,
                        n,
                        ms: a.ms(rtp_ts),
                        key,
                        frame,
                    };
                    self.out.push(Output::Transcode {
                        job,
                        from: source.session(),
                    });
                }
            }
        }
        self.deliver_video(now, pid, media, actions);
    }

    /// FLV video tag bodies of `pid`'s stream, each at its FLV time, to
    /// its players (the GOP cache, programs).
    fn deliver_video(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        media: Vec<(u32, Vec<u8>)>,
        actions: &mut Outputs,
    ) {
        for (timestamp, body) in media {
            let m = Media {
                type_id: types::VIDEO,
                timestamp,
                payload: Bytes::from(body),
            };
            self.deliver(now, pid, m, actions);
        }
    }

    /// What is due at `now` in participant `pid`'s bridge with no packet
    /// to bring it: its reorder gap asked for again or given up on (what
    /// was held behind it depacketized and delivered), its held audio
    /// placed by arrival once [`ALIGN_WAIT`] is up. Its publisher and what
    /// to tell or count it for, if anything.
    pub(super) fn bridge_timeout(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        actions: &mut Outputs,
    ) -> Option<(Source, Bridged)> {
        let b = self.streams.get_mut(&pid)?.bridge.as_mut()?;
        let mut video = None;
        if let Some(a) = b.video {
            let mut bridged = Bridged::default();
            let (mut out, mut nacks, mut first_ts) = (Vec::new(), Vec::new(), None);
            let Bridge {
                reorder, depack, ..
            } = &mut *b;
            let before = (reorder.filled, reorder.given_up);
            reorder.handle_timeout(now, &mut nacks, |s, t, m, p| {
                first_ts.get_or_insert(t);
                if let Some(d) = depack {
                    d.push(s, t, m, p, &mut out)
                }
            });
            bridged.gaps_filled = reorder.filled - before.0;
            bridged.gaps_given_up = reorder.given_up - before.1;
            let source = a.source.0;
            let config_ts = first_ts.unwrap_or(a.first_ts);
            self.depacketized(
                now,
                pid,
                source,
                a,
                config_ts,
                out,
                nacks,
                &mut bridged,
                actions,
            );
            video = (bridged != Bridged::default()).then_some((source, bridged));
        }
        self.flush_audio(now, pid, actions);
        video
    }

    /// Whether an Opus RTP packet of participant `pid`'s publisher should go
    /// to RTMP players (transcoded to AAC): `Some(true)` when its source
    /// changed and the transcoder must start afresh.
    pub fn on_rtp_audio(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        source: (Source, u32),
        sr: Option<(u64, u32)>,
        ts: u32,
    ) -> Option<bool> {
        let s = self.streams.get_mut(&pid)?;
        if s.publisher.is_some() {
            return None;
        }
        let b = s.bridge.get_or_insert_with(|| Bridge::new(now));
        let (_, changed) = anchor(&mut b.audio, b.epoch, now, source, ts, 48);
        if changed {
            b.aac_ms = None;
            b.audio_aligned = false;
            b.held.clear();
        }
        if sr.is_some() {
            b.audio_sr = sr;
        }
        Some(changed)
    }

    /// AAC tags the transcoder made from Opus of RTP time `rtp_ts`: held
    /// until the audio is aligned, then stamped a steady 1024 samples
    /// (21.3 ms) apart from the first.
    pub fn on_aac(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        rtp_ts: u32,
        tags: Vec<Vec<u8>>,
        actions: &mut Outputs,
    ) {
        let Some(b) = self.streams.get_mut(&pid).and_then(|s| s.bridge.as_mut()) else {
            return;
        };
        let due = b.poll_timeout();
        b.held.push((rtp_ts, tags));
        self.flush_audio(now, pid, actions);
        // Audio held unaligned has a deadline (ALIGN_WAIT): scheduled when
        // it appears, not at every frame.
        let next = self
            .streams
            .get(&pid)
            .and_then(|s| s.bridge.as_ref()?.poll_timeout());
        if next != due {
            self.schedule(Timer::Bridge(pid), next);
        }
    }

    /// The held AAC of `pid`'s bridge, once its audio is aligned (by the
    /// sender reports, or by arrival after [`ALIGN_WAIT`]), to its
    /// players.
    fn flush_audio(&mut self, now: Instant, pid: ParticipantId, actions: &mut Outputs) {
        let Some(b) = self.streams.get_mut(&pid).and_then(|s| s.bridge.as_mut()) else {
            return;
        };
        if b.held.is_empty() {
            return;
        }
        b.align_audio(now);
        let Some(a) = b.audio.filter(|_| b.audio_aligned) else {
            return;
        };
        let mut media = Vec::new();
        for (ts, tags) in std::mem::take(&mut b.held) {
            let mut clock = *b.aac_ms.get_or_insert(a.ms(ts) as f64);
            // A pause (no packets, or more lost than concealed): the steady
            // clock jumps to where the publisher's time says, never back.
            let expected = a.ms(ts) as f64;
            if expected - clock > AAC_RESYNC_MS {
                clock = expected;
            }
            for tag in tags {
                let config = tag.get(1) == Some(&0);
                media.push((clock as u32, tag));
                if !config {
                    clock += crate::transcode::AAC_FRAME as f64 / 48.0;
                }
            }
            b.aac_ms = Some(clock);
        }
        for (timestamp, body) in media {
            let m = Media {
                type_id: types::AUDIO,
                timestamp,
                payload: Bytes::from(body),
            };
            self.deliver(now, pid, m, actions);
        }
    }
}

/// How often an idle program looks at arriving WebRTC/RTP publishers.
const IDLE_CHOOSE_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::fixtures::*;
    use crate::output::{Action, Outputs};
    use crate::participants::Kinds;
    use gateway_ring::SessionId;

    /// Web's publishing session (its ingest 5).
    const WEB: Source = Source::Session(SessionId::new(5));
    const ONE: Source = Source::Session(SessionId::new(1));

    /// A WebRTC participant's RTP reaches the players of its name only.
    #[test]
    fn bridged_rtp_goes_to_its_participants_players() {
        let mut rooms = OneRoom::creating();
        let mut h = hub_with(3);
        send(&mut h, &mut rooms, 0, "publish", "r/bob");
        let web = rooms.parts.join(R77, "web");
        rooms.parts.publish(web, Kinds::BOTH, false).unwrap();
        send(&mut h, &mut rooms, 1, "play", "r/web");
        send(&mut h, &mut rooms, 2, "play", "r/bob");
        let t0 = Instant::now();
        assert!(h.wants_rtp(t0, web, &rooms.parts));
        let mut a = Outputs::default();
        // SPS, PPS, IDR as single NAL unit packets.
        let sps = [0x67, 0x42, 0x00, 0x1f, 0xe9, 0x02, 0xc1, 0x2c, 0x80];
        let nals: [&[u8]; 3] = [&sps, &[0x68, 0xce, 0x3c, 0x80], &[0x65, 0x88, 0x84]];
        for (i, nal) in nals.iter().enumerate() {
            let h264 = VideoCodec::H264;
            h.on_rtp_video(
                t0,
                web,
                h264,
                (WEB, 5),
                None,
                i as u16,
                0,
                i == 2,
                nal,
                &mut a,
            );
        }
        let web_got = drain(&mut h, 1);
        assert!(
            web_got
                .iter()
                .any(|(t, p)| *t == types::VIDEO && p[0] == 0x17 && p[1] == 1),
            "web's keyframe: {web_got:?}"
        );
        assert!(drain(&mut h, 2).iter().all(|(t, _)| *t != types::VIDEO));
    }

    /// A hub whose room "r" (77) holds participant web, a WebRTC
    /// publisher, and RTMP connection 0 playing it; web's bridge is wanted.
    fn web_played(t0: Instant) -> (Hub, OneRoom, ParticipantId) {
        let mut rooms = OneRoom::default();
        rooms
            .rooms
            .insert("r".into(), crate::hub::Place::Local(R77));
        let mut h = hub_with(1);
        let web = rooms.parts.join(R77, "web");
        rooms.parts.publish(web, Kinds::BOTH, false).unwrap();
        send_at(&mut h, &mut rooms, 0, "play", "r/web", t0);
        assert!(h.wants_rtp(t0, web, &rooms.parts));
        (h, rooms, web)
    }

    /// SPS, PPS and an IDR of RTP time `ts` from web (ingest 5), as single
    /// NAL unit packets from `seq`, arriving at `now`.
    fn web_keyframe(h: &mut Hub, web: ParticipantId, seq: u16, ts: u32, now: Instant) -> Bridged {
        let sps = [0x67, 0x42, 0x00, 0x1f, 0xe9, 0x02, 0xc1, 0x2c, 0x80];
        let nals: [&[u8]; 3] = [&sps, &[0x68, 0xce, 0x3c, 0x80], &[0x65, 0x88, 0x84]];
        let mut total = Bridged::default();
        for (i, nal) in nals.iter().enumerate() {
            let seq = seq.wrapping_add(i as u16);
            let b = h.on_rtp_video(
                now,
                web,
                VideoCodec::H264,
                (WEB, 5),
                None,
                seq,
                ts,
                i == 2,
                nal,
                &mut Outputs::default(),
            );
            total.need_keyframe |= b.need_keyframe;
            total.gaps_given_up += b.gaps_given_up;
        }
        total
    }

    /// FLV times of the keyframes queued for player `idx`.
    fn keyframes(h: &mut Hub, idx: u32) -> Vec<u32> {
        let q = h.queue(idx).unwrap();
        q.take_messages()
            .into_iter()
            .filter(|m| m.type_id == types::VIDEO && m.payload[..2] == [0x17, 1])
            .map(|m| m.timestamp)
            .collect()
    }

    /// A lost packet and no packet after the frames held behind it (the
    /// publisher paused, or its next packets are lost too): the gap is
    /// asked for again at RENACK and given up at WAIT by the deadline
    /// alone, and the keyframe held behind it reaches the RTMP player
    /// then, not before; the publisher is asked for a keyframe and the
    /// gap counted against its ingest.
    #[test]
    fn a_gap_is_given_up_at_its_deadline_and_the_player_gets_what_it_held() {
        use crate::reorder::{RENACK, WAIT};
        let t0 = Instant::now();
        let ms = |m: u64| t0 + std::time::Duration::from_millis(m);
        let (mut h, rooms, web) = web_played(t0);
        let mut a = Outputs::default();
        web_keyframe(&mut h, web, 0, 0, t0);
        assert_eq!(keyframes(&mut h, 0).len(), 1);
        assert_eq!(h.poll_timeout(), None, "nothing pending");
        // seq 3 (a frame's end) is lost; the next keyframe waits behind it.
        let held = web_keyframe(&mut h, web, 4, 90 * 100, ms(10));
        assert_eq!(held, Bridged::default());
        assert!(keyframes(&mut h, 0).is_empty(), "held behind the gap");
        assert_eq!(h.poll_timeout(), Some(ms(10) + RENACK));
        h.out.clear();
        assert!(h
            .handle_timeout(ms(10) + RENACK, &rooms.parts, &mut a)
            .bridged
            .is_empty());
        let nacks: Vec<u16> = h
            .out
            .notes()
            .filter_map(|n| match n {
                Note::Nack { source: WEB, seq } => Some(*seq),
                _ => None,
            })
            .collect();
        assert_eq!(nacks, [3], "asked for once more");
        assert_eq!(h.poll_timeout(), Some(ms(10) + WAIT));
        let before = ms(10) + WAIT - std::time::Duration::from_millis(1);
        assert!(h
            .handle_timeout(before, &rooms.parts, &mut a)
            .bridged
            .is_empty());
        assert!(keyframes(&mut h, 0).is_empty(), "given up before WAIT");
        let fired = h.handle_timeout(ms(10) + WAIT, &rooms.parts, &mut a);
        let expected = Bridged {
            need_keyframe: true,
            gaps_given_up: 1,
            ..Default::default()
        };
        assert_eq!(fired.bridged, [(WEB, expected)]);
        assert!(fired.failed.is_empty());
        assert_eq!(keyframes(&mut h, 0).len(), 1, "the held keyframe delivered");
        assert!(a.actions().any(|x| *x == Action::Wake(0)), "{a:?}");
        assert_eq!(h.poll_timeout(), None);
    }

    /// Audio from the transcoder waits for the sender reports to line it
    /// up with the video; none come, and no more audio either: at
    /// ALIGN_WAIT after its anchor it goes to the player by arrival, with
    /// no packet to bring it, and not a moment before.
    #[test]
    fn held_audio_goes_out_at_align_wait_without_further_packets() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + std::time::Duration::from_millis(m);
        let (mut h, rooms, web) = web_played(t0);
        let mut a = Outputs::default();
        web_keyframe(&mut h, web, 0, 0, t0);
        keyframes(&mut h, 0);
        assert_eq!(h.on_rtp_audio(ms(5), web, (WEB, 6), None, 0), Some(true));
        let tags = vec![vec![0xaf, 0, 0x11, 0x90], vec![0xaf, 1, 7]];
        h.on_aac(ms(30), web, 0, tags, &mut a);
        let audio = |h: &mut Hub| -> Vec<u8> {
            let q = h.queue(0).unwrap();
            q.take_messages()
                .into_iter()
                .filter(|m| m.type_id == types::AUDIO)
                .map(|m| m.payload[1])
                .collect()
        };
        assert!(audio(&mut h).is_empty(), "held for the reports");
        let due = ms(5) + ALIGN_WAIT;
        assert_eq!(h.poll_timeout(), Some(due));
        let before = due - std::time::Duration::from_millis(1);
        h.handle_timeout(before, &rooms.parts, &mut a);
        assert!(audio(&mut h).is_empty(), "placed before ALIGN_WAIT");
        h.handle_timeout(due, &rooms.parts, &mut a);
        assert_eq!(audio(&mut h), [0, 1], "config and frame, by arrival");
        assert_eq!(h.poll_timeout(), None);
    }

    /// An idle program (nobody publishing when it started) looked at the
    /// publishers less than IDLE_CHOOSE_EVERY ago when web's first packet
    /// comes: it chooses web when that time is up, with no further packet.
    #[test]
    fn an_idle_program_chooses_a_publisher_at_its_deadline() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + std::time::Duration::from_millis(m);
        let mut rooms = OneRoom::default();
        rooms
            .rooms
            .insert("r".into(), crate::hub::Place::Local(R77));
        let mut h = hub_with(1);
        let mut a = Outputs::default();
        send_at(&mut h, &mut rooms, 0, "play", "r", t0);
        let idle = |h: &Hub| {
            h.programs
                .values()
                .all(|p| p.pending.is_none() && p.source.is_none())
        };
        assert_eq!(h.programs.len(), 1);
        // A packet of someone not publishing: the programs look, find nobody.
        assert!(!h.wants_rtp(t0, ParticipantId::new(999), &rooms.parts));
        assert_eq!(h.poll_timeout(), None, "nothing to look at again");
        let web = rooms.parts.join(R77, "web");
        rooms.parts.publish(web, Kinds::BOTH, false).unwrap();
        assert!(!h.wants_rtp(ms(50), web, &rooms.parts), "too soon");
        let due = t0 + IDLE_CHOOSE_EVERY;
        assert_eq!(h.poll_timeout(), Some(due));
        h.handle_timeout(
            due - std::time::Duration::from_millis(1),
            &rooms.parts,
            &mut a,
        );
        assert!(idle(&h), "chose before its time");
        h.handle_timeout(due, &rooms.parts, &mut a);
        assert!(h.programs.values().all(|p| p.pending == Some(web)));
        assert_eq!(h.poll_timeout(), None);
        assert!(
            h.wants_rtp(ms(250), web, &rooms.parts),
            "web's stream is watched"
        );
    }

    /// Audio that arrives 100 ms after video but, per the sender reports,
    /// was captured at the same instant lands at the same FLV time.
    #[test]
    fn sender_reports_line_audio_up_with_video() {
        let t0 = Instant::now();
        let mut b = Bridge::new(t0);
        let ntp = 1000u64 << 32;
        anchor(&mut b.video, b.epoch, t0, (ONE, 1), 90_000, 90);
        let later = t0 + std::time::Duration::from_millis(100);
        anchor(&mut b.audio, b.epoch, later, (ONE, 2), 48_000, 48);
        b.video_sr = Some((ntp, 90_000));
        b.align_audio(later);
        assert!(!b.audio_aligned, "waits for the audio's report");
        b.audio_sr = Some((ntp, 48_000));
        b.align_audio(later);
        assert!(b.audio_aligned);
        let (v, a) = (b.video.unwrap(), b.audio.unwrap());
        assert_eq!(v.ms(90_000), a.ms(48_000));
        assert_eq!(v.ms(90_000 + 90 * 500), a.ms(48_000 + 48 * 500));

        // Without reports, arrival order stands after the wait.
        let mut c = Bridge::new(t0);
        anchor(&mut c.audio, c.epoch, t0, (ONE, 2), 0, 48);
        c.align_audio(t0 + ALIGN_WAIT);
        assert!(c.audio_aligned);
    }
}
