//! The ingress path: one datagram on a session's port. An RTP ingest's
//! source is latched and checked, SRTP removed; a WebRTC peer's datagram is
//! STUN, DTLS, RTCP (acted on) or media. What comes out is the plaintext RTP
//! packet to fan out, or nothing (bad packets counted by reason).

use crate::output::Output;
use std::net::SocketAddrV4;
use std::time::Instant;

use gateway_ring::msg::{DropReason, MediaKind};

use crate::codec::VideoCodec;
use crate::media::video_codec as video_codec_of;
use crate::participants::ParticipantId;
use crate::rtcp;
use crate::rtp::{is_rtcp, RtpHeader};
use crate::srtp::{SrtpContext, SrtpError};
use crate::webrtc::PeerEvent;

use super::sessions::{Ingest, Role};
use super::track_cache::TrackCache;
use super::{Control, Handle, Inbound, Router, Source, SOURCE_TIMEOUT};

impl Router {
    /// One datagram arrived on session `h`'s port. Returns the plaintext RTP
    /// packet to fan out, if it is one; RTCP and bad packets return `None`
    /// (bad ones counted by reason).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        h: Handle,
        src: SocketAddrV4,
        buf: &mut [u8],
    ) -> Option<Inbound> {
        let s = self.sessions.get_mut(h as usize)?.as_mut()?;
        let result = match &mut s.role {
            Role::Ingest(ing) => Self::ingest_datagram(now, ing, &mut s.srtp, src, buf),
            Role::Egress(_) => {
                // Receiver reports from the egress peer: counted, not forwarded.
                Err(None)
            }
            // No socket: nothing arrives for it.
            Role::Relayed(_) => Err(None),
            Role::Webrtc(w) => {
                if self.scratch.len() < 1500 {
                    self.scratch.resize(1500, 0);
                }
                let room = s.room;
                let video_codec = w.peer.video_codec;
                let ev = w.peer.on_datagram(now, src, buf, &mut self.scratch);
                let session = w.peer.spec.session;
                match ev {
                    Ok(PeerEvent::Media {
                        kind,
                        len,
                        seq_no,
                        timestamp,
                        ssrc,
                        level,
                        lost_before,
                    }) => Ok(Inbound {
                        room,
                        source: Source::Session(session),
                        participant: ParticipantId::NOBODY,
                        key: 0,
                        level,
                        kind,
                        codec: video_codec.and_then(|c| video_codec_of(kind, c)),
                        len,
                        seq_no,
                        timestamp,
                        ssrc,
                        lost_before,
                    }),
                    Ok(PeerEvent::Reply { len, start_dtls }) => {
                        let mut data = self.pool.pop().unwrap_or_default();
                        data.clear();
                        data.extend_from_slice(&self.scratch[..len]);
                        self.out.push(Output::Transmit(Control {
                            from: h,
                            dest: src,
                            data,
                        }));
                        if start_dtls {
                            self.out.push(Output::DtlsStart { session });
                        }
                        Err(None)
                    }
                    Ok(PeerEvent::Dtls) => {
                        self.out.push(Output::Dtls {
                            session,
                            data: buf.to_vec(),
                        });
                        Err(None)
                    }
                    Ok(PeerEvent::Rtcp(n)) => {
                        // Junk feedback is a counted drop, as junk media is.
                        let junk = w.peer.on_player_rtcp(now, &buf[..n]);
                        s.stats.drops[DropReason::Malformed as usize] += junk;
                        s.stats.estimate_bps = w.peer.estimate().map_or(0, u64::from);
                        s.stats.video_pauses = w.peer.video_pauses();
                        let fb = &mut self.feedback;
                        fb.clear();
                        rtcp::walk(&buf[..n], |f| fb.push(f));
                        s.stats.packets += 1;
                        s.stats.bytes += buf.len() as u64;
                        s.dirty = true;
                        self.on_feedback(now, h);
                        return None;
                    }
                    Ok(PeerEvent::Consumed) => Err(None),
                    Err(reason) => Err(Some(reason)),
                }
            }
        };
        match result {
            Ok(inbound) if inbound.len > crate::rtp::MAX_PACKET => {
                // Bounded here, where packets enter: send slots, the NACK
                // cache and the RTMP bridge all rely on it.
                s.stats.drops[DropReason::Oversize as usize] += 1;
                s.dirty = true;
                None
            }
            Ok(inbound) => {
                s.stats.packets += 1;
                s.stats.bytes += buf.len() as u64;
                s.dirty = true;
                let feedback = matches!(&s.role, Role::Webrtc(w) if w.peer.feedback_due(now));
                let inbound = Inbound {
                    room: s.room,
                    participant: s.pid,
                    key: s.key,
                    ..inbound
                };
                if inbound.kind == MediaKind::Video {
                    // For NACKs: the track's cache (see `track_cache.rs`).
                    self.track_caches
                        .entry(inbound.source)
                        .or_insert_with(|| TrackCache::window(now))
                        .copy(now, inbound.seq_no, &buf[..inbound.len]);
                }
                if feedback {
                    // At most every 100 ms per publisher: never per packet.
                    self.send_rtcp(h, |peer, out| peer.write_feedback(now, out));
                }
                Some(inbound)
            }
            Err(Some(reason)) => {
                s.stats.drops[reason as usize] += 1;
                s.dirty = true;
                None
            }
            Err(None) => {
                s.stats.packets += 1;
                s.stats.bytes += buf.len() as u64;
                s.dirty = true;
                None
            }
        }
    }

    /// `Err(Some(reason))` drops, `Err(None)` consumes (RTCP).
    fn ingest_datagram(
        now: Instant,
        ing: &mut Ingest,
        srtp: &mut Option<SrtpContext>,
        src: SocketAddrV4,
        buf: &mut [u8],
    ) -> Result<Inbound, Option<DropReason>> {
        if buf.len() < 12 || buf[0] >> 6 != 2 {
            return Err(Some(DropReason::Malformed));
        }
        let rtcp = is_rtcp(buf);
        if let Some(peer) = ing.peer {
            let silent = ing
                .last_rx
                .is_none_or(|t| now.saturating_duration_since(t) >= SOURCE_TIMEOUT);
            // Senders without rtcp-mux (ffmpeg) send RTCP from a second socket:
            // accept RTCP from the publisher's host. It is consumed, never forwarded.
            let same_host_rtcp = rtcp && peer.ip() == src.ip();
            if peer != src && !silent && !same_host_rtcp {
                return Err(Some(DropReason::UnknownSource));
            }
        }
        let srtp_err = |e: SrtpError| match e {
            SrtpError::Auth => DropReason::Auth,
            SrtpError::Replay => DropReason::Replay,
            SrtpError::Malformed | SrtpError::NoRoom => DropReason::Malformed,
        };
        let len = match srtp {
            Some(ctx) if rtcp => ctx.unprotect_rtcp(buf).map_err(|e| Some(srtp_err(e)))?,
            Some(ctx) => ctx.unprotect_rtp(buf).map_err(|e| Some(srtp_err(e)))?,
            None => buf.len(),
        };
        // Authentic (or plain and well-formed below): this source is the publisher.
        let latch = |ing: &mut Ingest| {
            ing.peer = Some(src);
            ing.last_rx = Some(now);
        };
        if rtcp {
            // RTCP never latches the publisher: ffmpeg's first datagram is an
            // SR from its separate RTCP socket.
            return Err(None);
        }
        let h = RtpHeader::parse(&buf[..len]).map_err(|_| Some(DropReason::Malformed))?;
        if h.pt != ing.spec.payload_type {
            return Err(Some(DropReason::PayloadType));
        }
        latch(ing);
        Ok(Inbound {
            room: ing.spec.room,
            source: Source::Session(ing.spec.session),
            participant: ParticipantId::NOBODY,
            key: 0,
            level: None,
            kind: ing.spec.kind,
            codec: video_codec_of(ing.spec.kind, VideoCodec::NEGOTIATED),
            len,
            seq_no: h.seq_no,
            timestamp: h.timestamp,
            ssrc: h.ssrc,
            lost_before: 0,
        })
    }
}
