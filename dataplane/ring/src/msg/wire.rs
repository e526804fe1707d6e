//! The slot encoding: a [`Writer`] and a [`Reader`] of little-endian
//! fields, and [`Message`] for [`Command`] and [`Event`] written with them.

use super::*;

struct Writer<'a> {
    buf: &'a mut [u8; SLOT_SIZE],
    pos: usize,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a mut [u8; SLOT_SIZE], tag: u8) -> Self {
        buf.fill(0);
        buf[0] = MSG_VERSION;
        buf[1] = tag;
        Writer { buf, pos: 2 }
    }
    fn bytes(&mut self, b: &[u8]) {
        // Every message fits SLOT_SIZE (the largest, a WebrtcSpec with the
        // longest fields and MAX_TRACKS tracks, is 487 bytes), so this slice
        // cannot go out of bounds; `every_message_round_trips` checks it.
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn room_id(&mut self, r: RoomId) {
        self.u32(r.get());
    }
    fn session_id(&mut self, s: SessionId) {
        self.u64(s.get());
    }
    fn name(&mut self, s: &str) {
        self.short(s, MAX_NAME)
    }
    fn short(&mut self, s: &str, max: usize) {
        let mut n = s.len().min(max);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        let b = &s.as_bytes()[..n];
        self.u8(b.len() as u8);
        self.bytes(b);
    }
    fn srtp(&mut self, k: &Option<SrtpKey>) {
        match k {
            None => self.u8(0),
            Some(k) => {
                self.u8(k.suite as u8);
                self.bytes(&k.material);
            }
        }
    }
    fn room(&mut self, r: &RoomSpec) {
        self.room_id(r.room);
        self.name(&r.name);
    }
    fn ingest(&mut self, s: &IngestSpec) {
        self.session_id(s.session);
        self.room_id(s.room);
        self.u16(s.port);
        self.u8(s.kind as u8);
        self.u8(s.payload_type);
        self.u32(s.clock_rate);
        self.srtp(&s.srtp);
        self.u64(s.created_ms);
        self.name(&s.participant);
    }
    fn webrtc(&mut self, s: &WebrtcSpec) {
        self.session_id(s.session);
        self.room_id(s.room);
        self.u16(s.port);
        self.u8(s.direction as u8);
        self.short(&s.ice_ufrag, MAX_UFRAG);
        self.short(&s.ice_pwd, MAX_PWD);
        self.short(&s.remote_ufrag, MAX_UFRAG);
        self.bytes(&s.remote_fingerprint);
        let n = s.tracks.len().min(MAX_TRACKS);
        self.u8(n as u8);
        for t in &s.tracks[..n] {
            self.u8(t.kind as u8);
            self.u8(t.codec as u8);
            self.u8(t.pt);
            self.u32(t.ssrc);
            self.u32(t.source);
            self.u8(t.audio_level);
            self.u8(t.twcc);
            self.u8(t.abs_send_time);
            self.u8(t.rtx_pt);
            self.u8(t.codecs);
        }
        for (pt, rtx) in s.video_pts {
            self.u8(pt);
            self.u8(rtx);
        }
        self.u64(s.created_ms);
        self.name(&s.participant);
        self.u8(s.dtls_role as u8);
    }
    fn rtmp(&mut self, s: &RtmpSpec) {
        self.session_id(s.session);
        self.room_id(s.room);
        self.u8(match s.direction {
            Direction::Publish => 1,
            Direction::Subscribe => 0,
        });
        self.bytes(&s.peer_ip);
        self.u16(s.peer_port);
        self.u64(s.created_ms);
        self.name(&s.participant);
    }
    fn egress(&mut self, s: &EgressSpec) {
        self.session_id(s.session);
        self.room_id(s.room);
        self.u16(s.port);
        self.bytes(&s.dest_ip);
        self.u16(s.dest_port);
        self.srtp(&s.srtp);
        self.u64(s.created_ms);
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::UnexpectedEnd);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn room_id(&mut self) -> Result<RoomId, DecodeError> {
        Ok(RoomId::new(self.u32()?))
    }
    fn session_id(&mut self) -> Result<SessionId, DecodeError> {
        Ok(SessionId::new(self.u64()?))
    }
    fn end_reason(&mut self) -> Result<EndReason, DecodeError> {
        EndReason::from_code(self.u16()?).ok_or(DecodeError::Value("end reason"))
    }
    fn request(&mut self) -> Result<Request, DecodeError> {
        let tag = self.u8()?;
        let id = self.u64()?;
        let room = || {
            u32::try_from(id)
                .map(RoomId::new)
                .map_err(|_| DecodeError::Value("room id"))
        };
        let session = SessionId::new(id);
        Ok(match tag {
            Command::TAG_CREATE_ROOM => Request::CreateRoom(room()?),
            Command::TAG_DELETE_ROOM => Request::DeleteRoom(room()?),
            Command::TAG_CREATE_INGEST => Request::CreateIngest(session),
            Command::TAG_CREATE_EGRESS => Request::CreateEgress(session),
            Command::TAG_CREATE_WEBRTC => Request::CreateWebrtc(session),
            Command::TAG_DELETE_SESSION => Request::DeleteSession(session),
            _ => return Err(DecodeError::Value("answered command")),
        })
    }
    fn name(&mut self) -> Result<String, DecodeError> {
        self.short(MAX_NAME)
    }
    fn short(&mut self, max: usize) -> Result<String, DecodeError> {
        let n = self.u8()? as usize;
        if n > max {
            return Err(DecodeError::Value("name length"));
        }
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Value("name utf-8"))
    }
    fn kind(&mut self) -> Result<MediaKind, DecodeError> {
        match self.u8()? {
            0 => Ok(MediaKind::Video),
            1 => Ok(MediaKind::Audio),
            _ => Err(DecodeError::Value("media kind")),
        }
    }
    fn codec(&mut self) -> Result<Codec, DecodeError> {
        Ok(match self.u8()? {
            0 => Codec::Opus,
            1 => Codec::H264,
            2 => Codec::Vp8,
            3 => Codec::Vp9,
            4 => Codec::Av1,
            _ => return Err(DecodeError::Value("codec")),
        })
    }
    fn srtp(&mut self) -> Result<Option<SrtpKey>, DecodeError> {
        let suite = match self.u8()? {
            0 => return Ok(None),
            1 => SrtpSuite::AesCm128HmacSha1_80,
            2 => SrtpSuite::AeadAes128Gcm,
            3 => SrtpSuite::AeadAes256Gcm,
            _ => return Err(DecodeError::Value("srtp suite")),
        };
        let material = self.array::<MAX_KEY_MATERIAL>()?;
        Ok(Some(SrtpKey { suite, material }))
    }
    fn room(&mut self) -> Result<RoomSpec, DecodeError> {
        Ok(RoomSpec {
            room: self.room_id()?,
            name: self.name()?,
        })
    }
    fn ingest(&mut self) -> Result<IngestSpec, DecodeError> {
        Ok(IngestSpec {
            session: self.session_id()?,
            room: self.room_id()?,
            port: self.u16()?,
            kind: self.kind()?,
            payload_type: self.u8()?,
            clock_rate: self.u32()?,
            srtp: self.srtp()?,
            created_ms: self.u64()?,
            participant: self.name()?,
        })
    }
    fn webrtc(&mut self) -> Result<WebrtcSpec, DecodeError> {
        Ok(WebrtcSpec {
            session: self.session_id()?,
            room: self.room_id()?,
            port: self.u16()?,
            direction: match self.u8()? {
                0 => Direction::Publish,
                1 => Direction::Subscribe,
                _ => return Err(DecodeError::Value("direction")),
            },
            ice_ufrag: self.short(MAX_UFRAG)?,
            ice_pwd: self.short(MAX_PWD)?,
            remote_ufrag: self.short(MAX_UFRAG)?,
            remote_fingerprint: self.array()?,
            tracks: {
                let n = self.u8()? as usize;
                if n > MAX_TRACKS {
                    return Err(DecodeError::Value("track count"));
                }
                let mut tracks = Vec::with_capacity(n);
                for _ in 0..n {
                    tracks.push(TrackSpec {
                        kind: self.kind()?,
                        codec: self.codec()?,
                        pt: self.u8()?,
                        ssrc: self.u32()?,
                        source: self.u32()?,
                        audio_level: self.u8()?,
                        twcc: self.u8()?,
                        abs_send_time: self.u8()?,
                        rtx_pt: self.u8()?,
                        codecs: self.u8()?,
                    });
                }
                tracks
            },
            video_pts: {
                let mut pts = [(0, 0); 4];
                for p in &mut pts {
                    *p = (self.u8()?, self.u8()?);
                }
                pts
            },
            created_ms: self.u64()?,
            participant: self.name()?,
            dtls_role: match self.u8()? {
                0 => DtlsRole::Server,
                1 => DtlsRole::Client,
                _ => return Err(DecodeError::Value("DTLS role")),
            },
        })
    }
    fn rtmp(&mut self) -> Result<RtmpSpec, DecodeError> {
        Ok(RtmpSpec {
            session: self.session_id()?,
            room: self.room_id()?,
            direction: match self.u8()? {
                0 => Direction::Subscribe,
                1 => Direction::Publish,
                _ => return Err(DecodeError::Value("publish flag")),
            },
            peer_ip: self.array()?,
            peer_port: self.u16()?,
            created_ms: self.u64()?,
            participant: self.name()?,
        })
    }
    fn egress(&mut self) -> Result<EgressSpec, DecodeError> {
        Ok(EgressSpec {
            session: self.session_id()?,
            room: self.room_id()?,
            port: self.u16()?,
            dest_ip: self.array()?,
            dest_port: self.u16()?,
            srtp: self.srtp()?,
            created_ms: self.u64()?,
        })
    }
    fn outcome(&mut self) -> Result<Outcome, DecodeError> {
        Ok(match self.u8()? {
            0 => Outcome::Ok,
            1 => Outcome::PortInUse,
            2 => Outcome::NotFound,
            3 => Outcome::Exists,
            4 => Outcome::Capacity,
            5 => Outcome::Failed,
            _ => return Err(DecodeError::Value("outcome")),
        })
    }
}

fn open(slot: &[u8]) -> Result<(u8, Reader<'_>), DecodeError> {
    let mut r = Reader { buf: slot };
    let version = r.u8()?;
    if version != MSG_VERSION {
        return Err(DecodeError::Version(version));
    }
    let tag = r.u8()?;
    Ok((tag, r))
}

impl Message for Command {
    fn encode(&self, slot: &mut [u8; SLOT_SIZE]) {
        let mut w = Writer::new(slot, self.tag());
        match self {
            Command::CreateRoom(r) => w.room(r),
            Command::DeleteRoom { room } => w.room_id(*room),
            Command::CreateIngest(s) => w.ingest(s),
            Command::CreateEgress(s) => w.egress(s),
            Command::CreateWebrtc(s) => w.webrtc(s),
            Command::DeleteSession { session } => w.session_id(*session),
            Command::Resync => {}
        }
    }

    fn decode(slot: &[u8]) -> Result<Self, DecodeError> {
        let (tag, mut r) = open(slot)?;
        Ok(match tag {
            Self::TAG_CREATE_ROOM => Command::CreateRoom(r.room()?),
            Self::TAG_DELETE_ROOM => Command::DeleteRoom { room: r.room_id()? },
            Self::TAG_CREATE_INGEST => Command::CreateIngest(r.ingest()?),
            Self::TAG_CREATE_EGRESS => Command::CreateEgress(r.egress()?),
            Self::TAG_CREATE_WEBRTC => Command::CreateWebrtc(r.webrtc()?),
            Self::TAG_DELETE_SESSION => Command::DeleteSession {
                session: r.session_id()?,
            },
            Self::TAG_RESYNC => Command::Resync,
            t => return Err(DecodeError::Tag(t)),
        })
    }
}

impl Message for Event {
    fn encode(&self, slot: &mut [u8; SLOT_SIZE]) {
        let tag = match self {
            Event::Done { .. } => 1,
            Event::Room(_) => 2,
            Event::Ingest(_) => 3,
            Event::Egress(_) => 4,
            Event::ResyncDone { .. } => 5,
            Event::Stats(_) => 6,
            Event::SessionEnded { .. } => 7,
            Event::Webrtc(_) => 8,
            Event::Rtmp(_) => 9,
            Event::Shard(_) => 10,
            Event::Line { .. } => 11,
            Event::Speaker { .. } => 12,
            Event::MediaWarning { .. } => 13,
        };
        let mut w = Writer::new(slot, tag);
        match self {
            Event::Done { request, outcome } => {
                let (tag, id) = match *request {
                    Request::CreateRoom(r) => (Command::TAG_CREATE_ROOM, u64::from(r.get())),
                    Request::DeleteRoom(r) => (Command::TAG_DELETE_ROOM, u64::from(r.get())),
                    Request::CreateIngest(s) => (Command::TAG_CREATE_INGEST, s.get()),
                    Request::CreateEgress(s) => (Command::TAG_CREATE_EGRESS, s.get()),
                    Request::CreateWebrtc(s) => (Command::TAG_CREATE_WEBRTC, s.get()),
                    Request::DeleteSession(s) => (Command::TAG_DELETE_SESSION, s.get()),
                };
                w.u8(tag);
                w.u64(id);
                w.u8(*outcome as u8);
            }
            Event::Room(r) => w.room(r),
            Event::Ingest(s) => w.ingest(s),
            Event::Egress(s) => w.egress(s),
            Event::Webrtc(s) => w.webrtc(s),
            Event::Rtmp(s) => w.rtmp(s),
            Event::Shard(s) => {
                w.u32(s.shard);
                for t in s.turns {
                    w.u64(t);
                }
                w.u64(s.busy_us);
                w.u64(s.udp_sends);
                w.u64(s.udp_datagrams);
                for l in s.limits {
                    w.u64(l);
                }
                w.u64(s.panics);
            }
            Event::ResyncDone { epoch } => w.u64(*epoch),
            Event::Stats(s) => {
                w.session_id(s.session);
                w.u64(s.packets);
                w.u64(s.bytes);
                for d in s.drops {
                    w.u64(d);
                }
                w.u64(s.retransmits);
                w.u64(s.keyframe_requests);
                w.u64(s.bridge_gaps_filled);
                w.u64(s.bridge_gaps_given_up);
                w.u64(s.estimate_bps);
                w.u64(s.video_pauses);
            }
            Event::SessionEnded { session, reason } => {
                w.session_id(*session);
                w.u16(reason.code());
            }
            Event::Line {
                session,
                line,
                participant,
            } => {
                w.session_id(*session);
                w.u8(*line);
                w.name(participant);
            }
            Event::Speaker { room, participant } => {
                w.room_id(*room);
                w.name(participant);
            }
            Event::MediaWarning { session, what } => {
                w.session_id(*session);
                w.short(what, MAX_TEXT);
            }
        }
    }

    fn decode(slot: &[u8]) -> Result<Self, DecodeError> {
        let (tag, mut r) = open(slot)?;
        Ok(match tag {
            1 => Event::Done {
                request: r.request()?,
                outcome: r.outcome()?,
            },
            2 => Event::Room(r.room()?),
            3 => Event::Ingest(r.ingest()?),
            4 => Event::Egress(r.egress()?),
            5 => Event::ResyncDone { epoch: r.u64()? },
            6 => {
                let session = r.session_id()?;
                let packets = r.u64()?;
                let bytes = r.u64()?;
                let mut drops = [0; DropReason::COUNT];
                for d in &mut drops {
                    *d = r.u64()?;
                }
                Event::Stats(SessionStats {
                    session,
                    packets,
                    bytes,
                    drops,
                    retransmits: r.u64()?,
                    keyframe_requests: r.u64()?,
                    bridge_gaps_filled: r.u64()?,
                    bridge_gaps_given_up: r.u64()?,
                    estimate_bps: r.u64()?,
                    video_pauses: r.u64()?,
                })
            }
            7 => Event::SessionEnded {
                session: r.session_id()?,
                reason: r.end_reason()?,
            },
            8 => Event::Webrtc(r.webrtc()?),
            9 => Event::Rtmp(r.rtmp()?),
            10 => {
                let shard = r.u32()?;
                let mut turns = [0; TURN_BUCKETS_US.len() + 1];
                for t in &mut turns {
                    *t = r.u64()?;
                }
                let (busy_us, udp_sends, udp_datagrams) = (r.u64()?, r.u64()?, r.u64()?);
                let mut limits = [0; Limit::COUNT];
                for l in &mut limits {
                    *l = r.u64()?;
                }
                Event::Shard(ShardStats {
                    shard,
                    turns,
                    busy_us,
                    udp_sends,
                    udp_datagrams,
                    limits,
                    panics: r.u64()?,
                })
            }
            11 => Event::Line {
                session: r.session_id()?,
                line: r.u8()?,
                participant: r.name()?,
            },
            12 => Event::Speaker {
                room: r.room_id()?,
                participant: r.name()?,
            },
            13 => Event::MediaWarning {
                session: r.session_id()?,
                what: r.short(MAX_TEXT)?,
            },
            t => return Err(DecodeError::Tag(t)),
        })
    }
}

/// The body of the `ring_decode` fuzz target, shared with the unit tests.
pub fn fuzz_decode(data: &[u8]) {
    let mut slot = [0u8; SLOT_SIZE];
    if let Ok(c) = Command::decode(data) {
        c.encode(&mut slot);
        assert_eq!(Command::decode(&slot), Ok(c));
    }
    if let Ok(e) = Event::decode(data) {
        e.encode(&mut slot);
        assert_eq!(Event::decode(&slot), Ok(e));
    }
}
