//! Egress tracks: the rewrite of each outgoing track (one SSRC, continuous
//! sequence numbers and timestamps, whichever publisher feeds it), which
//! line of a WebRTC player carries which publisher, and `prepare_egress`,
//! the per-copy half of the fan-out.

use gateway_ring::msg::Event;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use gateway_ring::msg::{DropReason, MediaKind};

use crate::bwe::Video;
use crate::codec::{PictureIds, VideoCodec};
use crate::output::Note;
use crate::participants::ParticipantId;
use crate::rtp::RtpHeader;

use super::sessions::Role;
use super::{Handle, Inbound, Router, Source, SOURCE_TIMEOUT};

/// The track of `tracks` that should carry `kind` media in `codec` (video)
/// from `source` (participant key `key`), and whether it takes the track
/// from a live source (a line carries only the codec it negotiated): the
/// one already bound to it; else the line the answer's
/// `a=msid` named for this participant (taken from whoever holds it); else
/// a free line the answer named for nobody, or for someone who has not
/// come within [`SOURCE_TIMEOUT`] (of the player's start, or of the line's
/// last packet); else one whose source went silent.
pub(super) fn pick_track(
    tracks: &[OutTrack],
    kind: MediaKind,
    codec: Option<VideoCodec>,
    source: Source,
    key: u32,
    created: Instant,
    now: Instant,
) -> Option<(usize, bool)> {
    let of_kind = || {
        tracks.iter().enumerate().filter(|(_, t)| {
            t.kind == kind && t.carries(codec) && source.fits(|c| t.carries(Some(c)))
        })
    };
    let long_ago = |at: Option<Instant>| {
        at.is_none_or(|at| now.saturating_duration_since(at) >= SOURCE_TIMEOUT)
    };
    if let Some((i, _)) = of_kind().find(|(_, t)| t.source.is_some_and(|s| s.0 == source)) {
        return Some((i, false));
    }
    if let Some((i, _)) = of_kind().find(|(_, t)| t.want == key && t.source_key != key) {
        return Some((i, true));
    }
    of_kind()
        .find(|(_, t)| t.source.is_none() && (t.want == 0 || long_ago(t.last_at.or(Some(created)))))
        .or_else(|| of_kind().find(|(_, t)| t.source.is_some() && long_ago(t.last_at)))
        .map(|(i, _)| (i, false))
}

/// The priority of video line `i` among `tracks`' video lines (0 first):
/// a line of the room's active `speaker` first, then lines that carry
/// someone, then the rest, each group in line order.
pub(super) fn line_rank(tracks: &[OutTrack], i: usize, speaker: Option<ParticipantId>) -> usize {
    let key = |j: usize, t: &OutTrack| {
        let idle = t.source.is_none();
        let speaks = !idle && speaker.is_some_and(|p| p == t.source_pid);
        (!speaks, idle, j)
    };
    let mine = key(i, &tracks[i]);
    tracks
        .iter()
        .enumerate()
        .filter(|(j, t)| t.kind == MediaKind::Video && key(*j, t) < mine)
        .count()
}

/// The RTP payload of packet `pkt[..len]`, if its header parses.
fn payload_of(pkt: &[u8], len: usize) -> Option<&[u8]> {
    let pkt = pkt.get(..len)?;
    let h = RtpHeader::parse(pkt).ok()?;
    pkt.get(h.len..)
}

/// [`payload_of`], to write.
pub(super) fn payload_of_mut(pkt: &mut [u8], len: usize) -> Option<&mut [u8]> {
    let pkt = pkt.get_mut(..len)?;
    let h = RtpHeader::parse(pkt).ok()?;
    pkt.get_mut(h.len..)
}

/// Rewrite state of one outgoing track of an egress: receivers see one SSRC
/// with continuous sequence numbers and timestamps, whichever ingest feeds it.
pub(super) struct OutTrack {
    pub(super) kind: MediaKind,
    /// Video: the codec it carries now (its publisher's), and `pt` and
    /// `rtx_pt` are that codec's ...
    pub(super) codec: Option<VideoCodec>,
    /// ... of those it negotiated: (payload type, RTX payload type) by
    /// [`VideoCodec::index`]; a payload type 0 is a codec it does not carry.
    pub(super) pts: [(u8, u8); 4],
    pub(super) ssrc: u32,
    pub(super) pt: u8,
    pub(super) clock_rate: u32,
    /// (the publisher, its SSRC) currently mapped.
    pub(super) source: Option<(Source, u32)>,
    /// The participant of `source`, and its key.
    pub(super) source_pid: ParticipantId,
    pub(super) source_key: u32,
    /// Subscribe: the key of the participant the answer named for this line (0: none).
    pub(super) want: u32,
    pub(super) seq_delta: u16,
    pub(super) ts_delta: u32,
    pub(super) last_seq: u16,
    pub(super) last_ts: u32,
    pub(super) last_at: Option<Instant>,
    /// Packets and payload octets sent, for sender reports.
    pub(super) sent: u32,
    pub(super) octets: u32,
    /// The player just connected, or lost the picture of this line's RTMP
    /// publisher (PLI), which cannot be asked for a keyframe: the GOP in
    /// the publisher's track cache is replayed into the line at the next
    /// frame boundary (a line that has carried nothing takes no packet of
    /// such a publisher until then; a line fed by a publisher that can be
    /// asked lets it go: a keyframe was requested). When the last replay
    /// was.
    pub(super) replay_wanted: bool,
    pub(super) last_replay: Option<Instant>,
    /// WebRTC player, video: the RTX payload type its answer took (0: none,
    /// resends go on the media SSRC), and the RTX stream's next sequence.
    pub(super) rtx_pt: u8,
    pub(super) rtx_seq: u16,
    /// WebRTC player, audio: the id its answer gave RFC 6464 audio levels
    /// (0: none); each packet's level, read from the publisher's own id at
    /// ingress, is written back under it.
    pub(super) audio_level: u8,
    /// Output sequence numbers up to here (exclusive) are from before the
    /// last replay or in it, or from the publisher before the last change
    /// of publisher: NACKs for them are not answered (the mapping moved
    /// past them).
    pub(super) replayed_until: Option<u16>,
    /// Video (VP8, VP9): the picture numbering its player sees.
    pub(super) pictures: PictureIds,
    /// Video: the player's path could not take it, and the line takes
    /// nothing until its source's next keyframe ...
    pub(super) await_keyframe: bool,
    /// ... from which it goes on in its own numbering, past what it did
    /// not send (as at a change of publisher).
    pub(super) rebase: bool,
}

impl OutTrack {
    pub(super) fn new(
        kind: MediaKind,
        codec: Option<VideoCodec>,
        ssrc: u32,
        pt: u8,
        want: u32,
    ) -> OutTrack {
        let clock_rate = match kind {
            MediaKind::Video => 90_000,
            MediaKind::Audio => 48_000,
        };
        let mut pts = [(0, 0); 4];
        if let Some(c) = codec {
            pts[c.index()] = (pt, 0);
        }
        OutTrack {
            kind,
            codec,
            pts,
            ssrc,
            pt,
            clock_rate,
            source: None,
            source_pid: ParticipantId::NOBODY,
            source_key: 0,
            want,
            seq_delta: 0,
            ts_delta: 0,
            last_seq: 0,
            last_ts: 0,
            last_at: None,
            sent: 0,
            octets: 0,
            replay_wanted: false,
            last_replay: None,
            audio_level: 0,
            replayed_until: None,
            rtx_pt: 0,
            rtx_seq: 0,
            pictures: PictureIds::default(),
            await_keyframe: false,
            rebase: false,
        }
    }

    /// Whether this line negotiated `codec` (`None`: audio, for an audio line).
    pub(super) fn carries(&self, codec: Option<VideoCodec>) -> bool {
        match codec {
            Some(c) => self.pts[c.index()].0 != 0,
            None => self.codec.is_none(),
        }
    }

    /// Sends `codec` from now on (a publisher in another codec took the line).
    pub(super) fn carry(&mut self, codec: VideoCodec) {
        (self.pt, self.rtx_pt) = self.pts[codec.index()];
        self.codec = Some(codec);
    }

    /// Whether this track takes a packet of `source`: its own source's, or
    /// a new source's when the current one went silent, is the same
    /// ingest, or `take` (the line is this source's).
    pub(super) fn accepts(&self, now: Instant, source: (Source, u32), take: bool) -> bool {
        if self.source.is_none() || self.source == Some(source) || take {
            return true;
        }
        let current_silent = self
            .last_at
            .is_none_or(|at| now.saturating_duration_since(at) >= SOURCE_TIMEOUT);
        current_silent || self.source.map(|s| s.0) == Some(source.0)
    }

    /// Maps an input (seq, ts) to the output stream, or `None` when another
    /// live ingest owns this track (unless `take`: the line is this source's).
    pub(super) fn map(
        &mut self,
        now: Instant,
        source: (Source, u32),
        seq: u16,
        ts: u32,
        take: bool,
    ) -> Option<(u16, u32)> {
        let rebase = std::mem::take(&mut self.rebase);
        if self.source != Some(source) || rebase {
            if !self.accepts(now, source, take) {
                return None;
            }
            if let Some(at) = self.last_at {
                // Continue where the previous source stopped: next sequence
                // number, and a timestamp advanced by the wall time in between.
                let gap = now.saturating_duration_since(at).as_secs_f64();
                let ticks = ((gap * self.clock_rate as f64) as u32).max(1);
                self.seq_delta = self.last_seq.wrapping_add(1).wrapping_sub(seq);
                self.ts_delta = self.last_ts.wrapping_add(ticks).wrapping_sub(ts);
                // NACKs from before the change would map onto the new
                // source's packets: they go unanswered.
                self.replayed_until = Some(self.last_seq.wrapping_add(1));
            }
            self.source = Some(source);
        }
        let out_seq = seq.wrapping_add(self.seq_delta);
        let out_ts = ts.wrapping_add(self.ts_delta);
        if self.last_at.is_none() || (out_seq.wrapping_sub(self.last_seq) as i16) > 0 {
            self.last_seq = out_seq;
            self.last_ts = out_ts;
        }
        self.last_at = Some(now);
        Some((out_seq, out_ts))
    }
}

impl Router {
    /// Prepares `pkt[..inbound.len]` (a copy of the inbound plaintext) for
    /// egress `h`: rewrites the header, applies SRTP, counts it. Returns the
    /// wire length and destination, or `None` if this egress does not take it.
    pub fn prepare_egress(
        &mut self,
        now: Instant,
        h: Handle,
        inbound: &Inbound,
        pkt: &mut [u8],
    ) -> Option<(usize, SocketAddrV4)> {
        let s = self.sessions.get_mut(h as usize)?.as_mut()?;
        let source = (inbound.source, inbound.ssrc);
        let session = s.stats.session;
        let (len, dest) = match &mut s.role {
            Role::Egress(eg) => {
                let (track, port) = match inbound.kind {
                    MediaKind::Video => (&mut eg.video, eg.spec.dest_port),
                    MediaKind::Audio => (&mut eg.audio, eg.spec.dest_port.wrapping_add(2)),
                };
                if !track.carries(inbound.codec) {
                    // Its SDP says H264: another codec has no line here.
                    return None;
                }
                let (seq, ts) = track.map(now, source, inbound.seq_no, inbound.timestamp, false)?;
                RtpHeader::rewrite(pkt, track.pt, seq, ts, track.ssrc);
                let len = match &mut s.srtp {
                    Some(ctx) => match ctx.protect_rtp(pkt, inbound.len) {
                        Ok(n) => n,
                        Err(_) => {
                            s.stats.drops[DropReason::Send as usize] += 1;
                            return None;
                        }
                    },
                    None => inbound.len,
                };
                let dest = SocketAddrV4::new(Ipv4Addr::from(eg.spec.dest_ip), port);
                (len, dest)
            }
            Role::Webrtc(w) => {
                // A participant never gets its own tracks; the publisher
                // itself, a player not connected yet, or no media line free.
                if inbound.participant == s.pid {
                    return None;
                }
                let dest = w.peer.destination()?;
                let created = w.peer.created;
                let (i, take) = pick_track(
                    &w.tracks,
                    inbound.kind,
                    inbound.codec,
                    inbound.source,
                    inbound.key,
                    created,
                    now,
                )?;
                // What the player's path can take, its lines in priority
                // (the active speaker's first): a paused line drops its
                // video (audio goes on); when it flows again it waits for a
                // keyframe (asked for) and goes on in its numbering.
                if inbound.kind == MediaKind::Video && w.peer.estimates() {
                    let speaker = self.rooms.get(&inbound.room).and_then(|r| r.speaker);
                    let rank = line_rank(&w.tracks, i, speaker);
                    if w.peer.video(now, rank, inbound.len) == Video::Paused {
                        w.tracks[i].await_keyframe = true;
                        return None;
                    }
                }
                let track = &mut w.tracks[i];
                let mut resumed = false;
                if track.await_keyframe {
                    let payload = payload_of(pkt, inbound.len)?;
                    if !inbound.codec.is_some_and(|c| c.starts_keyframe(payload)) {
                        self.out.note(Note::KeyframeWanted {
                            source: inbound.source,
                        });
                        return None;
                    }
                    (track.await_keyframe, track.rebase, resumed) = (false, true, true);
                }
                if track.replay_wanted {
                    match inbound.source {
                        // A publisher that can be asked was asked for a keyframe.
                        Source::Session(_) => track.replay_wanted = false,
                        // A line that has carried nothing waits for its
                        // replay, which the track cache serves (and binds
                        // the line with) before the packet that begins
                        // the next frame is fanned out.
                        Source::Rtmp(_) | Source::RtmpTranscoded(..) if track.last_at.is_none() => {
                            return None
                        }
                        Source::Rtmp(_) | Source::RtmpTranscoded(..) => {}
                    }
                }
                // VP8, VP9, AV1: a line starts, or changes publisher, at
                // the publisher's keyframe (asked for): their decoders
                // cannot begin on a delta frame. Picture ids continue
                // across a change.
                let codec = inbound.codec.filter(|c| c.switches_at_keyframes());
                let mut switched = false;
                if let Some(codec) = codec {
                    if !track.accepts(now, source, take) {
                        return None;
                    }
                    switched = track.source != Some(source);
                    let payload = payload_of(pkt, inbound.len)?;
                    if switched && !codec.starts_keyframe(payload) {
                        self.out.note(Note::KeyframeWanted {
                            source: inbound.source,
                        });
                        return None;
                    }
                }
                let (seq, ts) = track.map(now, source, inbound.seq_no, inbound.timestamp, take)?;
                if let Some(c) = inbound.codec.filter(|&c| track.codec != Some(c)) {
                    track.carry(c);
                }
                if let Some(codec) = codec {
                    let end = inbound.len;
                    if let Some(payload) = payload_of_mut(pkt, end) {
                        let jumped = switched || resumed;
                        codec.rewrite_picture_ids(payload, &mut track.pictures, jumped, false);
                    }
                }
                if track.source_pid != inbound.participant {
                    // The line changed hands: the room's events say so.
                    track.source_pid = inbound.participant;
                    track.source_key = inbound.key;
                    self.out.event(Event::Line {
                        session,
                        line: i as u8,
                        participant: self
                            .participants
                            .name(inbound.participant)
                            .unwrap_or("")
                            .to_string(),
                    });
                }
                RtpHeader::rewrite(pkt, track.pt, seq, ts, track.ssrc);
                track.sent = track.sent.wrapping_add(1);
                track.octets = track
                    .octets
                    .wrapping_add((inbound.len.saturating_sub(12)) as u32);
                // Each packet's audio level under the player's own id.
                let level = inbound.level.filter(|_| track.audio_level != 0);
                let level = level.map(|l| (track.audio_level, l));
                match w.peer.protect_rtp(now, pkt, inbound.len, level) {
                    Ok(n) => (n, dest),
                    Err(_) => {
                        s.stats.drops[DropReason::Send as usize] += 1;
                        return None;
                    }
                }
            }
            Role::Ingest(_) | Role::Relayed(_) => return None,
        };
        s.stats.packets += 1;
        s.stats.bytes += len as u64;
        s.dirty = true;
        Some((len, dest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::participants::ParticipantId;

    /// An E-RTMP AV1 push's two tracks: a line that carries AV1 (with or
    /// without H264, as a browser's) takes the push as it is and never its
    /// H264 transcode; a line of H264 only takes the transcode. Whichever
    /// comes first, the rule is the same.
    #[test]
    fn a_line_takes_a_push_as_it_is_or_its_transcode_never_both() {
        let now = Instant::now();
        let pid = ParticipantId::new(7);
        let (own, h264) = (
            Source::Rtmp(pid),
            Source::RtmpTranscoded(pid, VideoCodec::Av1),
        );
        let both = || {
            let mut t = OutTrack::new(MediaKind::Video, Some(VideoCodec::H264), 1, 102, 0);
            t.pts[VideoCodec::Av1.index()] = (45, 0);
            t
        };
        let only_h264 = || OutTrack::new(MediaKind::Video, Some(VideoCodec::H264), 2, 102, 0);
        let only_av1 = || OutTrack::new(MediaKind::Video, Some(VideoCodec::Av1), 3, 45, 0);
        let pick = |tracks: &[OutTrack], codec, source| {
            pick_track(tracks, MediaKind::Video, Some(codec), source, 9, now, now).map(|p| p.0)
        };
        for tracks in [vec![both(), only_h264()], vec![only_h264(), both()]] {
            let b = tracks.iter().position(|t| t.ssrc == 1);
            let h = tracks.iter().position(|t| t.ssrc == 2);
            assert_eq!(pick(&tracks, VideoCodec::Av1, own), b);
            assert_eq!(pick(&tracks, VideoCodec::H264, h264), h);
        }
        assert_eq!(pick(&[both()], VideoCodec::H264, h264), None);
        assert_eq!(pick(&[only_av1()], VideoCodec::H264, h264), None);
        assert_eq!(pick(&[only_av1()], VideoCodec::Av1, own), Some(0));
        // Anyone else's H264 goes on a line of both as before.
        assert_eq!(
            pick(&[both()], VideoCodec::H264, Source::Rtmp(pid)),
            Some(0)
        );
    }
}
