//! The bridge RTP → FLV ([`Bridge`]): a WebRTC or RTP publisher's video
//! through a reorder buffer (gaps NACKed) and its codec's depacketizer,
//! and its Opus as AAC from the transcoder, placed on its stream's FLV
//! timeline (an [`Anchor`] per RTP stream, the audio's lined up with the
//! video's by the sender reports) for the stream's RTMP and HTTP-FLV
//! players and programs.

use std::time::Instant;

use bytes::Bytes;

use super::Hub;
use crate::codec::{Depacketizer, Out, VideoCodec};
use crate::output::{Note, Outputs};
use crate::participants::{Participants, Pid};
use crate::reorder::Reorder;
use crate::rtmp::conn::{types, Media};

/// RTP video → FLV video tags for one participant's stream.
pub(super) struct Bridge {
    /// Packets back in order (gaps NACKed and waited for) before the depacketizer.
    reorder: Reorder,
    depack: Depacketizer,
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
            depack: VideoCodec::NEGOTIATED.depacketizer(),
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
}

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
    pub(super) source: (u64, u32),
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
    source: (u64, u32),
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
    pub fn wants_rtp(&mut self, now: Instant, pid: Pid, parts: &Participants) -> bool {
        if let Some(s) = self.streams.get(&pid) {
            return s.publisher.is_none();
        }
        // Idle programs (nobody to show) look at the publishers at most
        // every IDLE_CHOOSE_EVERY, all rooms at once: not a scan at every
        // packet of a publisher nobody plays over RTMP.
        if self.next_idle_choose.is_some_and(|t| now < t) {
            return false;
        }
        self.next_idle_choose = Some(now + IDLE_CHOOSE_EVERY);
        let mut idle: Vec<u32> = self
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
        self.streams.contains_key(&pid)
    }

    /// One RTP video packet of participant `pid`'s publisher (`source` =
    /// ingest session and SSRC): what the publisher must be told or counted for.
    #[allow(clippy::too_many_arguments)]
    pub fn on_rtp_video(
        &mut self,
        now: Instant,
        pid: Pid,
        source: (u64, u32),
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
        let b = s.bridge.get_or_insert_with(|| Bridge::new(now));
        let (a, changed) = anchor(&mut b.video, b.epoch, now, source, ts, 90);
        if sr.is_some() {
            b.video_sr = sr;
        }
        if changed {
            // A new publisher session (or SSRC) of this participant: a fresh
            // depacketizer waiting for its first IDR, on the same timeline.
            bridged.need_keyframe = true;
            b.depack = VideoCodec::NEGOTIATED.depacketizer();
            b.reorder = Reorder::default();
        }
        let mut out = Vec::new();
        let mut nacks = Vec::new();
        let Bridge {
            reorder, depack, ..
        } = b;
        let before = (reorder.filled, reorder.given_up);
        reorder.push(now, seq, ts, marker, payload, &mut nacks, |s, t, m, p| {
            depack.push(s, t, m, p, &mut out)
        });
        bridged.gaps_filled = reorder.filled - before.0;
        bridged.gaps_given_up = reorder.given_up - before.1;
        for seq in nacks {
            self.out.note(Note::Nack {
                ingest: source.0,
                seq,
            });
        }
        let mut media = Vec::new();
        for o in out {
            match o {
                Out::NeedKeyframe => bridged.need_keyframe = true,
                Out::BadParameterSet => bridged.bad_parameter_sets += 1,
                Out::Config(body) => media.push((a.ms(ts), body)),
                Out::Frame { rtp_ts, body, .. } => media.push((a.ms(rtp_ts), body)),
            }
        }
        for (timestamp, body) in media {
            let m = Media {
                type_id: types::VIDEO,
                timestamp,
                payload: Bytes::from(body),
            };
            self.deliver(now, pid, m, actions);
        }
        bridged
    }

    /// Whether an Opus RTP packet of participant `pid`'s publisher should go
    /// to RTMP players (transcoded to AAC): `Some(true)` when its source
    /// changed and the transcoder must start afresh.
    pub fn on_rtp_audio(
        &mut self,
        now: Instant,
        pid: Pid,
        source: (u64, u32),
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
        pid: Pid,
        rtp_ts: u32,
        tags: Vec<Vec<u8>>,
        actions: &mut Outputs,
    ) {
        let Some(b) = self.streams.get_mut(&pid).and_then(|s| s.bridge.as_mut()) else {
            return;
        };
        b.held.push((rtp_ts, tags));
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
    use crate::output::Outputs;
    use crate::participants::Kinds;

    /// A WebRTC participant's RTP reaches the players of its name only.
    #[test]
    fn bridged_rtp_goes_to_its_participants_players() {
        let mut rooms = OneRoom::creating();
        let mut h = hub_with(3);
        send(&mut h, &mut rooms, 0, "publish", "r/bob");
        let web = rooms.parts.join(77, "web");
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
            h.on_rtp_video(t0, web, (5, 5), None, i as u16, 0, i == 2, nal, &mut a);
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

    /// Audio that arrives 100 ms after video but, per the sender reports,
    /// was captured at the same instant lands at the same FLV time.
    #[test]
    fn sender_reports_line_audio_up_with_video() {
        let t0 = Instant::now();
        let mut b = Bridge::new(t0);
        let ntp = 1000u64 << 32;
        anchor(&mut b.video, b.epoch, t0, (1, 1), 90_000, 90);
        let later = t0 + std::time::Duration::from_millis(100);
        anchor(&mut b.audio, b.epoch, later, (1, 2), 48_000, 48);
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
        anchor(&mut c.audio, c.epoch, t0, (1, 2), 0, 48);
        c.align_audio(t0 + ALIGN_WAIT);
        assert!(c.audio_aligned);
    }
}
