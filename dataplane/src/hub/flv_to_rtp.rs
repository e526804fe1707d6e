//! The bridge FLV → RTP ([`RtpOut`]): an RTMP publisher's video as RTP
//! (its codec's packetizer) at its presentation time (through the
//! re-encode thread first when it has B-frames, up to the shard's limit)
//! and its AAC as Opus RTP from the transcoder, for the room's WebRTC
//! players and RTP egresses (its video kept once, in the router's track
//! cache, for their NACKs and GOP replays); and the warnings about what
//! WebRTC players cannot get or play.

use bytes::Bytes;
use gateway_ring::RoomId;

use super::streams::Stream;
use super::Hub;
use crate::codec::{ertmp, FlvCodec, Packetizer, Pushed, VideoCodec};
use crate::media::RtpFromRtmp;
use crate::output::{Note, Output, Outputs};
use crate::participants::ParticipantId;
use crate::rtmp::conn::{types, Media};
use crate::transcode::Job;

/// FLV video → RTP for one participant (and its audio's RTP numbering).
/// What a WebRTC player wants of it again (a resend, the GOP when it
/// connects or loses the picture: an RTMP publisher cannot be asked for a
/// keyframe) the router serves from its track cache.
pub(super) struct RtpOut {
    packetizer: Packetizer,
    /// An E-RTMP push of AV1 or VP9 (profile 0), from its sequence start:
    /// its video packetized as it is, on an SSRC of its own, for the WebRTC
    /// lines that carry its codec; what `packetizer` makes of the
    /// transcode goes to the others.
    pub(super) native: Option<(VideoCodec, Packetizer)>,
    /// Decided at its publisher's first B-frame, for the publisher's life:
    /// whether its video goes through the shard's re-encode thread
    /// ([`Job::Video`]) before the packetizer (under the shard's limit then).
    pub(super) reencode: Option<bool>,
    /// Decided at its publisher's first E-RTMP video (HEVC, AV1, VP9),
    /// for the publisher's life: whether it is transcoded to H264 on the
    /// re-encode thread for WebRTC players (under `--video-transcodes`).
    pub(super) transcode: Option<bool>,
    /// What its SSRCs are made from: its participant and push number.
    seed: u32,
    audio_ssrc: u32,
    audio_seq: u16,
    /// RTP time of the next Opus packet.
    pub(super) audio_ts: Option<u32>,
}

impl RtpOut {
    /// One FLV video tag body at RTP time `ts` into RTP packets, noted for
    /// the router (its track cache, then the fan-out): H264 (the push's,
    /// or what the re-encode thread made of it), or with `native` the
    /// push's own AV1 or VP9.
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        native: bool,
        body: &[u8],
        ts: u32,
        room: RoomId,
        key: u32,
        pid: ParticipantId,
        out: &mut Outputs,
    ) -> Pushed {
        let own = self.native.as_ref().map(|n| n.0);
        let (codec, transcoded_from, packetizer) = match (&mut self.native, native) {
            (Some((codec, p)), true) => (*codec, None, p),
            (None, true) => return Pushed::Nothing,
            (_, false) => (FlvCodec::NEGOTIATED.video(), own, &mut self.packetizer),
        };
        let mut packets = Vec::new();
        let pushed = packetizer.push(body, ts, &mut packets);
        for p in packets {
            out.note(Note::RtmpVideo(RtpFromRtmp {
                room,
                pid,
                key,
                packet: Bytes::from(p),
                codec,
                transcoded_from,
            }));
        }
        pushed
    }

    /// Push number `push` of participant `pid`: SSRCs of its own.
    pub(super) fn new(pid: ParticipantId, push: u32) -> RtpOut {
        let seed = pid.get() ^ push.wrapping_mul(0x2545_f491);
        RtpOut {
            packetizer: FlvCodec::NEGOTIATED.packetizer(seed.wrapping_mul(0x9e37_79b1) | 1),
            native: None,
            reencode: None,
            transcode: None,
            seed,
            audio_ssrc: seed.wrapping_mul(0x85eb_ca6b) | 1,
            audio_seq: 0,
            audio_ts: None,
        }
    }
}

impl Hub {
    /// Packetizes an RTMP publisher's video for the room's WebRTC side, or
    /// hands it to the re-encode thread when it has B-frames (which
    /// browsers cannot play) and the shard re-encodes fewer than its limit.
    pub(super) fn packetize_for_webrtc(&mut self, pid: ParticipantId, m: &Media) -> Pushed {
        if ertmp::codec(&m.payload).is_some() {
            self.forward_enhanced(pid, m);
            return self.transcode_for_webrtc(pid, m);
        }
        let reencoded = |s: &Stream| s.rtp.as_ref().is_some_and(|r| r.reencode == Some(true));
        // Decided once per publisher, at its first B-frame.
        let decide = has_bframes(m)
            && self
                .streams
                .get(&pid)
                .is_some_and(|s| s.rtp.as_ref().is_none_or(|r| r.reencode.is_none()));
        let start = decide
            && self.streams.values().filter(|s| reencoded(s)).count()
                < self.bframe_reencodes as usize;
        let Some(s) = self.streams.get_mut(&pid) else {
            return Pushed::Nothing;
        };
        let (room, key) = (s.room, s.key);
        let out = s.rtp.get_or_insert_with(|| RtpOut::new(pid, s.pushes));
        if decide {
            out.reencode = Some(start);
        }
        if start {
            tracing::info!(
                %pid,
                "RTMP publisher's video has B-frames: re-encoded for WebRTC players"
            );
            // The decoder starts from the stream's parameter sets and the
            // GOP so far (empty when the offsets start on a keyframe, as
            // x264's do): WebRTC players need not wait for the next one.
            let config = s
                .cache
                .configs()
                .filter(|c| crate::rtmp::stream::is_video_config(c));
            let gop = s.cache.gop().iter().filter(|g| g.type_id == types::VIDEO);
            for c in config.chain(gop) {
                let job = Job::Video {
                    stream: pid,
                    ms: c.timestamp,
                    flv: c.payload.to_vec(),
                };
                self.out.push(Output::Transcode { job, from: None });
            }
        }
        if out.reencode == Some(true) {
            self.out.push(Output::Transcode {
                job: Job::Video {
                    stream: pid,
                    ms: m.timestamp,
                    flv: m.payload.to_vec(),
                },
                from: None,
            });
            return Pushed::Nothing;
        }
        let ts = presentation_ms(m).wrapping_mul(90);
        out.push(false, &m.payload, ts, room, key, pid, &mut self.out)
    }

    /// An E-RTMP push's AV1 or VP9 (profile 0) as it is, for the WebRTC
    /// lines that carry its codec: packetized from its sequence start on
    /// (its configuration says the profile; each one sent again is taken,
    /// going on in the same stream for the same codec), at its FLV time
    /// (these FourCCs carry no composition offset).
    fn forward_enhanced(&mut self, pid: ParticipantId, m: &Media) {
        let Some(s) = self.streams.get_mut(&pid) else {
            return;
        };
        let (room, key) = (s.room, s.key);
        let out = s.rtp.get_or_insert_with(|| RtpOut::new(pid, s.pushes));
        if ertmp::is_sequence_start(&m.payload) {
            let ssrc = out.seed.wrapping_mul(0xc2b2_ae35) | 1;
            let mut fresh = Packetizer::enhanced(&m.payload, ssrc);
            match (out.native.take(), &mut fresh) {
                (Some((was, old)), Some((codec, new))) if was == *codec => new.continue_from(old),
                (_, Some((codec, _))) => {
                    tracing::info!(%pid, "RTMP publisher's E-RTMP video: {} as it is to WebRTC players that offered it", codec.name());
                }
                (_, None) => {}
            }
            out.native = fresh;
            return;
        }
        let ts = m.timestamp.wrapping_mul(90);
        out.push(true, &m.payload, ts, room, key, pid, &mut self.out);
    }

    /// An E-RTMP push's video (HEVC, AV1, VP9): to the re-encode thread,
    /// which makes H264 of it for the room's WebRTC side, when the shard
    /// transcodes fewer than `--video-transcodes` (decided at its first
    /// video message); the configuration and the GOP so far first, so
    /// WebRTC players need not wait for the next keyframe.
    fn transcode_for_webrtc(&mut self, pid: ParticipantId, m: &Media) -> Pushed {
        let decide = self
            .streams
            .get(&pid)
            .is_some_and(|s| s.rtp.as_ref().is_none_or(|r| r.transcode.is_none()));
        let start = decide && self.transcoding(pid) < self.video_transcodes as usize;
        let Some(s) = self.streams.get_mut(&pid) else {
            return Pushed::Nothing;
        };
        let out = s.rtp.get_or_insert_with(|| RtpOut::new(pid, s.pushes));
        if decide {
            out.transcode = Some(start);
        }
        if out.transcode != Some(true) {
            return Pushed::Nothing;
        }
        let mut flv: Vec<&Media> = Vec::new();
        if start {
            tracing::info!(%pid, "RTMP publisher's E-RTMP video: transcoded to H264 for WebRTC players");
            let config = s
                .cache
                .configs()
                .filter(|c| crate::rtmp::stream::is_video_config(c));
            let gop = s.cache.gop().iter().filter(|g| g.type_id == types::VIDEO);
            flv.extend(config.chain(gop));
        }
        flv.push(m);
        let jobs: Vec<Job> = flv
            .into_iter()
            .map(|c| Job::Video {
                stream: pid,
                ms: c.timestamp,
                flv: c.payload.to_vec(),
            })
            .collect();
        for job in jobs {
            self.out.push(Output::Transcode { job, from: None });
        }
        Pushed::Nothing
    }

    /// Video of participant `pid`'s RTMP publisher re-encoded without
    /// B-frames (FLV tag bodies at their presentation times), for the
    /// room's WebRTC side.
    pub fn on_reencoded(&mut self, pid: ParticipantId, tags: Vec<(u32, Vec<u8>)>) {
        let Some(s) = self.streams.get_mut(&pid) else {
            return;
        };
        let (room, key) = (s.room, s.key);
        // A publisher since then that is not re-encoded: stale output.
        let reencoded = |r: &&mut RtpOut| r.reencode == Some(true) || r.transcode == Some(true);
        let Some(out) = s.rtp.as_mut().filter(reencoded) else {
            return;
        };
        for (ms, body) in tags {
            out.push(
                false,
                &body,
                ms.wrapping_mul(90),
                room,
                key,
                pid,
                &mut self.out,
            );
        }
    }

    /// RTP packets for Opus the transcoder made from participant `pid`'s
    /// RTMP publisher's AAC at FLV time `ms`: 20 ms apart, on its audio SSRC.
    pub fn opus_rtp(
        &mut self,
        pid: ParticipantId,
        ms: u32,
        packets: Vec<Vec<u8>>,
    ) -> Vec<RtpFromRtmp> {
        let Some(s) = self.streams.get_mut(&pid) else {
            return Vec::new();
        };
        let (room, key) = (s.room, s.key);
        let Some(out) = s.rtp.as_mut() else {
            return Vec::new();
        };
        let mut ts = *out.audio_ts.get_or_insert(ms.wrapping_mul(48));
        let mut rtp = Vec::with_capacity(packets.len());
        for p in packets {
            let mut pkt = Vec::with_capacity(12 + p.len());
            pkt.extend_from_slice(&[0x80, 111]);
            pkt.extend_from_slice(&out.audio_seq.to_be_bytes());
            pkt.extend_from_slice(&ts.to_be_bytes());
            pkt.extend_from_slice(&out.audio_ssrc.to_be_bytes());
            pkt.extend_from_slice(&p);
            out.audio_seq = out.audio_seq.wrapping_add(1);
            ts = ts.wrapping_add(crate::transcode::OPUS_FRAME as u32);
            rtp.push(RtpFromRtmp {
                room,
                pid,
                key,
                packet: Bytes::from(pkt),
                codec: VideoCodec::NEGOTIATED, // unused: audio
                transcoded_from: None,
            });
        }
        out.audio_ts = Some(ts);
        rtp
    }
}

/// A video message's presentation time (ms): its FLV time (decode time)
/// plus the AVC packet's composition time offset, a signed 24-bit field.
fn presentation_ms(m: &Media) -> u32 {
    let cts = crate::codec::composition_offset(&m.payload);
    m.timestamp.wrapping_add(cts as u32)
}

/// Whether an FLV video message of a codec of ours has B-frames: a
/// composition time offset (presentation order differs from decode order).
pub(super) fn has_bframes(m: &Media) -> bool {
    m.type_id == types::VIDEO
        && FlvCodec::of_flv(&m.payload).is_some()
        && m.payload.get(1) == Some(&1)
        && presentation_ms(m) != m.timestamp
}

/// The video codecs bridged to WebRTC, named for a warning.
fn bridged_codecs() -> String {
    FlvCodec::ALL.map(|c| c.video().name()).join(", ")
}

/// What of an RTMP publisher's message WebRTC players cannot be given or
/// cannot play, or get only at a cost: its kind (1 video codec, 2 audio
/// format, 4 B-frames) and a description for the room's event. RTMP and
/// HTTP-FLV players get it as it is.
///
/// B-frames: Chromium's WebRTC decoder takes the output delay reordering
/// needs for an error ("avcodec_receive_frame error: -11"), drops the
/// frames and asks for keyframes, whatever the RTP times (measured: 9 of
/// 150 frames in 5 s; tests/tests/webrtc_chromium.rs). So they are
/// re-encoded away for the WebRTC side (`reencoded`, up to the first of
/// `limits` per shard; crate::reencode), or, past the limit or without the feature,
/// bridged as they are with presentation times as RTP times, which
/// decoders that reorder (ffmpeg, aiortc) play in order. Either way the
/// encoder can spare the cost: the event names the setting.
pub(super) fn media_warning(
    m: &Media,
    reencoded: bool,
    native: bool,
    limits: (u32, u32),
) -> Option<(u8, String)> {
    let (limit, transcodes) = limits;
    let first = *m.payload.first()?;
    let over = "RTMP and HTTP-FLV players get it as is";
    // Events carry 200 bytes (gateway_ring::msg::MAX_TEXT): the fix first.
    let fix = "x264 bframes=0 (OBS: x264 options) avoids it";
    match m.type_id {
        types::VIDEO if first & 0x80 != 0 => {
            let fourcc = m.payload.get(1..5).unwrap_or_default();
            let fourcc = String::from_utf8_lossy(fourcc);
            if crate::codec::ertmp::codec(&m.payload).is_none() {
                let ours = bridged_codecs();
                return Some((1, format!("video: {fourcc} (enhanced RTMP) is not bridged to WebRTC, only {ours} is; {over}")));
            }
            let why = match transcodes {
                0 => "transcoding is off or not built in".to_string(),
                n => format!("the shard already transcodes {n}, --video-transcodes"),
            };
            let as_is = "goes as it is to WebRTC players that offered it";
            Some((1, match (native, reencoded) {
                (true, true) => format!("video: {fourcc} (enhanced RTMP) {as_is}, transcoded to H264 for the others at a CPU cost; {over}"),
                (true, false) => format!("video: {fourcc} (enhanced RTMP) {as_is}; the others get none ({why}); {over}"),
                (false, true) => format!("video: {fourcc} (enhanced RTMP) is transcoded to H264 for WebRTC players at a CPU cost; {over}"),
                (false, false) => format!("video: {fourcc} (enhanced RTMP) is not bridged to WebRTC ({why}); {over}"),
            }))
        }
        types::VIDEO if FlvCodec::of_flv(&m.payload).is_none() => {
            let name = match first & 0x0f {
                2 => "Sorenson H.263",
                3 | 6 => "Screen video",
                4 | 5 => "VP6",
                12 => "HEVC",
                13 => "AV1",
                _ => "unknown",
            };
            let id = first & 0x0f;
            let ours = bridged_codecs();
            Some((1, format!("video: {name} (FLV codec id {id}) is not bridged to WebRTC, only {ours} is; {over}")))
        }
        types::VIDEO if has_bframes(m) && reencoded => Some((
            4,
            format!("video: H264 with B-frames, which browsers cannot play, is re-encoded for WebRTC at a CPU cost; {fix}; RTMP and HTTP-FLV get it as is"),
        )),
        types::VIDEO if has_bframes(m) => {
            let why = match limit {
                0 => "re-encoding is off or not built in".to_string(),
                n => format!("the shard already re-encodes {n}, --bframe-reencodes"),
            };
            Some((4, format!("video: H264 with B-frames, which browsers cannot play, goes to WebRTC as is ({why}); {fix}")))
        }
        types::AUDIO if first >> 4 != 10 => {
            let name = match first >> 4 {
                0 | 3 => "linear PCM",
                1 => "ADPCM",
                2 | 14 => "MP3",
                4..=6 => "Nellymoser",
                7 => "G.711 A-law",
                8 => "G.711 mu-law",
                11 => "Speex",
                _ => "unknown",
            };
            let format = first >> 4;
            Some((2, format!("audio: {name} (FLV sound format {format}) is not bridged to WebRTC, only AAC is; {over}")))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::connections::Role;
    use crate::hub::fixtures::*;
    use crate::output::Outputs;
    use crate::rtmp::chunk::write_message;
    use gateway_ring::msg::Event as RingEvent;
    use rml_amf0::Amf0Value;
    use std::time::Instant;

    /// RTP time for WebRTC is presentation time: the FLV time plus the
    /// signed 24-bit composition offset (B-frames); the room is warned once
    /// per kind about what browsers cannot play.
    #[test]
    fn presentation_times_and_media_warnings() {
        let video = |ts: u32, head: [u8; 5]| Media {
            type_id: types::VIDEO,
            timestamp: ts,
            payload: Bytes::copy_from_slice(&[&head[..], &[0x65, 0]].concat()),
        };
        assert_eq!(presentation_ms(&video(1000, [0x27, 1, 0, 0, 66])), 1066);
        assert_eq!(
            presentation_ms(&video(1000, [0x27, 1, 0xff, 0xff, 0xdf])),
            967
        );
        assert_eq!(presentation_ms(&video(1000, [0x17, 1, 0, 0, 0])), 1000);
        assert_eq!(
            media_warning(&video(1000, [0x17, 1, 0, 0, 0]), false, false, (2, 2)),
            None
        );
        for (reencoded, limit, says) in [
            (true, 2, "is re-encoded"),
            (false, 2, "already re-encodes 2"),
            (false, 0, "re-encoding is off"),
        ] {
            let bframes = media_warning(
                &video(1000, [0x27, 1, 0, 0, 66]),
                reencoded,
                false,
                (limit, 2),
            );
            let (kind, what) = bframes.unwrap();
            assert_eq!(kind, 4);
            assert!(what.contains("B-frames") && what.contains(says), "{what}");
            assert!(what.contains("bframes=0"), "{what}");
            assert!(what.len() <= gateway_ring::msg::MAX_TEXT, "{what}");
        }
        let hevc = media_warning(&video(0, [0x1c, 1, 0, 0, 0]), false, false, (2, 2)).unwrap();
        assert_eq!(hevc.0, 1);
        assert!(hevc.1.contains("HEVC"), "{}", hevc.1);
        // E-RTMP: transcoded, or not and why; a FourCC we do not decode.
        let ex = |fourcc: &[u8]| Media {
            type_id: types::VIDEO,
            timestamp: 0,
            payload: Bytes::from([&[0x90][..], fourcc, &[1, 2]].concat()),
        };
        for (fourcc, transcoded, limit, says) in [
            (
                &b"av01"[..],
                true,
                2,
                "av01 (enhanced RTMP) is transcoded to H264",
            ),
            (
                b"hvc1",
                false,
                2,
                "already transcodes 2, --video-transcodes",
            ),
            (b"vp09", false, 0, "transcoding is off"),
            (b"avc3", false, 2, "only H264 is"),
        ] {
            let (kind, what) = media_warning(&ex(fourcc), transcoded, false, (2, limit)).unwrap();
            assert_eq!(kind, 1);
            assert!(what.contains(says), "{what}");
            assert!(what.len() <= gateway_ring::msg::MAX_TEXT, "{what}");
        }
        let mp3 = Media {
            type_id: types::AUDIO,
            timestamp: 0,
            payload: Bytes::from_static(&[0x2f, 0xff]),
        };
        let mp3 = media_warning(&mp3, false, false, (2, 2)).unwrap();
        assert_eq!(mp3.0, 2);
        assert!(mp3.1.contains("MP3"), "{}", mp3.1);
    }

    /// `connect` and `publish` of `name`, as a client sends them.
    fn publish_of(name: &str) -> Vec<u8> {
        let name = Amf0Value::Utf8String(name.into());
        [connect(), command("publish", vec![name])].concat()
    }

    /// A hub of `conns` connections that re-encodes one B-frame publisher,
    /// and an FLV AVC sequence header for its publishers.
    fn reencoding_hub(conns: u32) -> (Hub, Vec<u8>) {
        let mut h = hub_with(conns);
        h.bframe_reencodes = 1;
        let sps = [0x67, 0x42, 0x00, 0x1f, 0xe9, 0x02, 0xc1, 0x2c, 0x80];
        let config = crate::codec::h264::config_tag(&sps, &[0x68, 0xce, 0x06, 0xe2]).unwrap();
        (h, config)
    }

    /// RTMP publishers with B-frames: up to the shard's limit their video
    /// goes to the re-encode thread (its sequence header first) and only
    /// what comes back is packetized, at its presentation time; past the
    /// limit it is packetized as it is. The room is told which, per
    /// publisher.
    #[test]
    fn b_frames_are_reencoded_up_to_the_shards_limit() {
        let mut rooms = OneRoom::creating();
        let (mut h, config) = reencoding_hub(2);
        let t0 = Instant::now();
        let mut a = Outputs::default();
        // An IDR shown 66 ms after it is decoded: B-frames follow.
        let idr = [0x17, 1, 0, 0, 66, 0, 0, 0, 2, 0x65, 0x88];
        let mut pids = Vec::new();
        for (idx, name) in [(0, "a"), (1, "b")] {
            let publish = publish_of(&format!("r/{name}"));
            h.on_bytes(t0, idx, &publish, &mut rooms, &mut a);
            let mut media = Vec::new();
            write_message(&mut media, 6, 0, types::VIDEO, 1, &config, 128);
            write_message(&mut media, 6, 1000, types::VIDEO, 1, &idr, 128);
            h.on_bytes(t0, idx, &media, &mut rooms, &mut a);
            let Some(Role::Publisher { pid, .. }) = h.conns.get(&idx).map(|c| c.role) else {
                panic!("{name} publishes");
            };
            pids.push(pid);
        }
        let (a_pid, b_pid) = (pids[0], pids[1]);
        let videos: Vec<(ParticipantId, u32, u8)> = h
            .out
            .jobs()
            .filter_map(|j| match j {
                Job::Video { stream, ms, flv } => Some((*stream, *ms, flv[1])),
                _ => None,
            })
            .collect();
        assert_eq!(videos, [(a_pid, 0, 0), (a_pid, 1000, 1)]);
        let rtp_ts = |h: &Hub, pid: ParticipantId| -> Vec<u32> {
            h.out
                .rtmp_video()
                .filter(|r| r.pid == pid)
                .map(|r| crate::rtp::RtpHeader::parse(&r.packet).unwrap().timestamp)
                .collect()
        };
        assert!(rtp_ts(&h, a_pid).is_empty());
        // b's as it is: parameter sets and the IDR, at presentation time.
        assert_eq!(rtp_ts(&h, b_pid), [1066 * 90, 1066 * 90]);
        let warnings = media_warnings(&h);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("is re-encoded"), "{warnings:?}");
        assert!(warnings[1].contains("already re-encodes 1"), "{warnings:?}");
        // What the re-encode thread made of a's: packetized at its time.
        h.out.clear();
        h.on_reencoded(a_pid, vec![(1066, config.clone()), (1066, idr.to_vec())]);
        assert_eq!(rtp_ts(&h, a_pid), [1066 * 90, 1066 * 90]);
        // Its output for b, which is not re-encoded, is stale: dropped.
        h.out.clear();
        h.on_reencoded(b_pid, vec![(1100, idr.to_vec())]);
        assert!(h.out.rtmp_video().next().is_none());
    }

    /// The `media_warning` events the hub queued, in order.
    fn media_warnings(h: &Hub) -> Vec<String> {
        h.out
            .events()
            .filter_map(|e| match e {
                RingEvent::MediaWarning { what, .. } => Some(what.clone()),
                _ => None,
            })
            .collect()
    }

    /// E-RTMP pushes (AV1 here): each is packetized as it is, in AV1, for
    /// the lines that carry AV1; up to the shard's `--video-transcodes`
    /// their video also goes to the re-encode thread, the cached
    /// configuration and GOP first for a push that starts mid-GOP, and what
    /// comes back is packetized as H264 (a transcode of AV1, for the other
    /// lines); past the limit those lines get nothing, and the room is told
    /// which.
    #[test]
    fn enhanced_rtmp_is_transcoded_for_webrtc_up_to_the_shards_limit() {
        let mut rooms = OneRoom::creating();
        let (mut h, config) = reencoding_hub(2);
        h.video_transcodes = 1;
        let t0 = Instant::now();
        let mut a = Outputs::default();
        let av01 = |head: u8, body: &[u8]| [&[head][..], b"av01", body].concat();
        let start = av01(0x90, &[0x81, 0, 0x0c, 0, 0x0a, 1, 0]);
        let key = av01(0x91, &[0x12, 0, 0x32, 1, 7]);
        let mut pids = Vec::new();
        for (idx, name) in [(0, "a"), (1, "b")] {
            h.on_bytes(
                t0,
                idx,
                &publish_of(&format!("r/{name}")),
                &mut rooms,
                &mut a,
            );
            let mut media = Vec::new();
            write_message(&mut media, 6, 0, types::VIDEO, 1, &start, 128);
            write_message(&mut media, 6, 40, types::VIDEO, 1, &key, 128);
            h.on_bytes(t0, idx, &media, &mut rooms, &mut a);
            let Some(Role::Publisher { pid, .. }) = h.conns.get(&idx).map(|c| c.role) else {
                panic!("{name} publishes");
            };
            pids.push(pid);
        }
        let videos: Vec<(ParticipantId, u32)> = h
            .out
            .jobs()
            .filter_map(|j| match j {
                Job::Video { stream, ms, .. } => Some((*stream, *ms)),
                _ => None,
            })
            .collect();
        assert_eq!(videos, [(pids[0], 0), (pids[0], 40)]);
        let as_is: Vec<_> = h
            .out
            .rtmp_video()
            .map(|r| (r.pid, r.codec, r.transcoded_from))
            .collect();
        let av1 = VideoCodec::Av1;
        assert_eq!(as_is, [(pids[0], av1, None), (pids[1], av1, None)]);
        let first = h.out.rtmp_video().next().unwrap();
        assert!(
            av1.starts_keyframe(&first.packet[12..]),
            "{:?}",
            first.packet
        );
        let warnings = media_warnings(&h);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings
                .iter()
                .all(|w| w.contains("as it is to WebRTC players that offered it")),
            "{warnings:?}"
        );
        assert!(
            warnings[0].contains("transcoded to H264 for the others"),
            "{warnings:?}"
        );
        assert!(warnings[1].contains("already transcodes 1"), "{warnings:?}");
        // The H264 the re-encode thread made of a's: packetized; any for b
        // (not transcoded) is stale: dropped.
        let idr = [0x17, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, 0x88];
        h.out.clear();
        h.on_reencoded(pids[0], vec![(40, config.clone()), (40, idr.to_vec())]);
        h.on_reencoded(pids[1], vec![(40, config), (40, idr.to_vec())]);
        let packetized: Vec<_> = h
            .out
            .rtmp_video()
            .map(|r| (r.pid, r.codec, r.transcoded_from))
            .collect();
        let h264 = (pids[0], VideoCodec::H264, Some(av1));
        assert_eq!(packetized, [h264, h264], "parameter sets, then the IDR");
        // What the limit reads: a's transcode, not b's refusal.
        assert_eq!(h.transcoding(pids[1]), 1);
        assert_eq!(h.transcoding(pids[0]), 0);
    }

    /// An E-RTMP push that sends its sequence start again (an encoder's new
    /// configuration) goes on in the same RTP stream, numbered on; one that
    /// changes codec (AV1 to VP9) starts another stream, its own SSRC.
    #[test]
    fn a_sequence_start_sent_again_goes_on_and_a_new_codec_is_a_new_stream() {
        let mut rooms = OneRoom::creating();
        let (mut h, _) = reencoding_hub(2);
        let t0 = Instant::now();
        let mut a = Outputs::default();
        let tag = |fourcc: &[u8], head: u8, body: &[u8]| [&[head][..], fourcc, body].concat();
        let av1_start = tag(b"av01", 0x90, &[0x81, 0, 0x0c, 0, 0x0a, 1, 0]);
        let av1_key = tag(b"av01", 0x91, &[0x12, 0, 0x32, 1, 7]);
        let vp9_start = tag(b"vp09", 0x90, &[1, 0, 0, 0, 0, 31, 0x80]);
        let vp9_key = tag(b"vp09", 0x91, &[0x82, 0x49, 0x83, 0x42, 0x00]);
        h.on_bytes(t0, 0, &publish_of("r/a"), &mut rooms, &mut a);
        let mut media = Vec::new();
        let tags = [
            &av1_start, &av1_key, &av1_start, &av1_key, &vp9_start, &vp9_key,
        ];
        for (i, body) in tags.iter().enumerate() {
            write_message(&mut media, 6, i as u32 * 40, types::VIDEO, 1, body, 128);
        }
        h.on_bytes(t0, 0, &media, &mut rooms, &mut a);
        let own: Vec<(VideoCodec, u32, u16)> = h
            .out
            .rtmp_video()
            .filter(|r| r.transcoded_from.is_none())
            .map(|r| {
                let hd = crate::rtp::RtpHeader::parse(&r.packet).unwrap();
                (r.codec, hd.ssrc, hd.seq_no)
            })
            .collect();
        let codecs: Vec<VideoCodec> = own.iter().map(|o| o.0).collect();
        assert_eq!(codecs, [VideoCodec::Av1, VideoCodec::Av1, VideoCodec::Vp9]);
        assert_eq!(own[0].1, own[1].1, "one stream");
        assert_eq!(own[1].2, own[0].2.wrapping_add(1), "numbered on");
        assert_ne!(own[2].1, own[0].1, "another codec, another stream");
    }

    /// A publisher whose composition offsets start after its keyframe:
    /// the re-encoder gets the GOP so far first, so WebRTC players need not
    /// wait for the next keyframe.
    #[test]
    fn a_reencode_that_starts_mid_gop_starts_from_its_keyframe() {
        let mut rooms = OneRoom::creating();
        let (mut h, config) = reencoding_hub(1);
        let t0 = Instant::now();
        let mut a = Outputs::default();
        h.on_bytes(t0, 0, &publish_of("r/a"), &mut rooms, &mut a);
        let mut media = Vec::new();
        write_message(&mut media, 6, 0, types::VIDEO, 1, &config, 128);
        let idr = [0x17, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, 0x88];
        write_message(&mut media, 6, 1000, types::VIDEO, 1, &idr, 128);
        write_message(&mut media, 8, 1010, types::AUDIO, 1, &[0xaf, 1, 9], 128);
        let b = [0x27, 1, 0, 0, 33, 0, 0, 0, 2, 0x41, 0x9a];
        write_message(&mut media, 6, 1033, types::VIDEO, 1, &b, 128);
        h.on_bytes(t0, 0, &media, &mut rooms, &mut a);
        let videos: Vec<(u32, u8)> = h
            .out
            .jobs()
            .filter_map(|j| match j {
                Job::Video { ms, flv, .. } => Some((*ms, flv[0])),
                _ => None,
            })
            .collect();
        assert_eq!(videos, [(0, 0x17), (1000, 0x17), (1033, 0x27)]);
    }
}
