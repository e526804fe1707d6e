//! H264 over RTP (RFC 6184) into FLV video tags, without decoding.
//!
//! ```text
//! RTP payload: NAL type 1-23 single NAL | 24 STAP-A (several NALs) | 28 FU-A (one NAL in pieces)
//!   ─▶ NAL units of one access unit (same timestamp; the marker bit ends it)
//!   ─▶ SPS/PPS kept for the AVCDecoderConfigurationRecord (a config tag when they change)
//!   ─▶ other NALs as AVCC (4-byte length prefix) in one FLV video tag body:
//!      [0x17 key | 0x27 inter][1 = NALUs][composition time 0 0 0] NALs...
//! ```
//!
//! A gap in sequence numbers loses part of a frame: the depacketizer drops
//! everything up to the next IDR rather than emit a corrupt frame, and asks
//! for a keyframe ([`Out::NeedKeyframe`]) so the wait is short.

const STAP_A: u8 = 24;
const FU_A: u8 = 28;
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;

/// Largest access unit assembled (bounds memory against a hostile sender).
pub const MAX_ACCESS_UNIT: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// An FLV video tag body with a new AVCDecoderConfigurationRecord.
    Config(Vec<u8>),
    /// An FLV video tag body with one access unit; `rtp_ts` is its RTP time.
    Frame {
        key: bool,
        rtp_ts: u32,
        body: Vec<u8>,
    },
    /// Part of a frame was lost: ask the publisher for a keyframe.
    NeedKeyframe,
}

#[derive(Default)]
pub struct Depacketizer {
    /// NALs of the access unit being assembled, AVCC framed, after the
    /// 5-byte FLV video header.
    au: Vec<u8>,
    au_ts: Option<u32>,
    au_key: bool,
    fu: Option<Vec<u8>>,
    last_seq: Option<u16>,
    /// After a loss, drop until an IDR.
    waiting_idr: bool,
    sps: Vec<u8>,
    pps: Vec<u8>,
    config_sent: bool,
}

/// `[0x17 | 0x27, 1, 0, 0, 0]`
fn video_header(key: bool) -> [u8; 5] {
    [if key { 0x17 } else { 0x27 }, 1, 0, 0, 0]
}

/// AVCDecoderConfigurationRecord (ISO 14496-15 §5.2.4.1) in an FLV
/// sequence-header tag body.
pub fn config_tag(sps: &[u8], pps: &[u8]) -> Vec<u8> {
    let mut b = vec![0x17, 0, 0, 0, 0, 1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    b.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    b.extend_from_slice(sps);
    b.push(1);
    b.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    b.extend_from_slice(pps);
    b
}

impl Depacketizer {
    pub fn new() -> Depacketizer {
        Depacketizer {
            waiting_idr: true,
            ..Default::default()
        }
    }

    /// One RTP packet's payload.
    pub fn push(&mut self, seq: u16, ts: u32, marker: bool, payload: &[u8], out: &mut Vec<Out>) {
        if let Some(last) = self.last_seq {
            let gap = seq.wrapping_sub(last);
            if gap == 0 || gap > 0x8000 {
                return; // duplicate or late: already past it
            }
            if gap != 1 {
                self.lost(out);
            }
        }
        self.last_seq = Some(seq);
        if self.au_ts.is_some_and(|t| t != ts) {
            // A new timestamp without a marker on the last one: finish it.
            self.finish(out);
        }
        self.au_ts = Some(ts);
        if payload.is_empty() {
            return;
        }
        match payload[0] & 0x1f {
            1..=23 => self.nal(payload),
            STAP_A => {
                let mut p = &payload[1..];
                while p.len() >= 2 {
                    let n = u16::from_be_bytes([p[0], p[1]]) as usize;
                    if n == 0 || p.len() < 2 + n {
                        break;
                    }
                    self.nal(&p[2..2 + n]);
                    p = &p[2 + n..];
                }
            }
            FU_A if payload.len() >= 2 => {
                let (indicator, header) = (payload[0], payload[1]);
                let (start, end) = (header & 0x80 != 0, header & 0x40 != 0);
                if start {
                    let mut nal = vec![(indicator & 0xe0) | (header & 0x1f)];
                    nal.extend_from_slice(&payload[2..]);
                    self.fu = Some(nal);
                } else if let Some(nal) = self.fu.as_mut() {
                    if nal.len() + payload.len() > MAX_ACCESS_UNIT {
                        self.fu = None;
                        self.lost(out);
                        return;
                    }
                    nal.extend_from_slice(&payload[2..]);
                } else {
                    // A middle or end fragment whose start we never saw.
                    self.lost(out);
                    return;
                }
                if end {
                    if let Some(nal) = self.fu.take() {
                        self.nal(&nal);
                    }
                }
            }
            _ => {} // STAP-B, MTAP, FU-B: not used by WebRTC senders
        }
        if marker {
            self.finish(out);
        }
    }

    fn lost(&mut self, out: &mut Vec<Out>) {
        self.au.clear();
        self.au_key = false;
        self.fu = None;
        self.waiting_idr = true;
        out.push(Out::NeedKeyframe);
    }

    fn nal(&mut self, nal: &[u8]) {
        match nal[0] & 0x1f {
            NAL_SPS => self.sps = nal.to_vec(),
            NAL_PPS => self.pps = nal.to_vec(),
            NAL_AUD => {}
            t => {
                if self.au.len() + nal.len() + 4 > MAX_ACCESS_UNIT {
                    return;
                }
                if self.au.is_empty() {
                    self.au.extend_from_slice(&video_header(false));
                }
                self.au_key |= t == NAL_IDR;
                self.au.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                self.au.extend_from_slice(nal);
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<Out>) {
        let Some(ts) = self.au_ts.take() else { return };
        if self.au.is_empty() {
            return;
        }
        let mut body = std::mem::take(&mut self.au);
        let key = std::mem::take(&mut self.au_key);
        if key {
            self.waiting_idr = false;
        }
        if self.waiting_idr {
            return;
        }
        if key && !self.sps.is_empty() && !self.pps.is_empty() {
            self.config_sent = true;
            out.push(Out::Config(config_tag(&self.sps, &self.pps)));
        }
        if !self.config_sent {
            return; // no decoder configuration yet: nothing decodable
        }
        body[0] = video_header(key)[0];
        out.push(Out::Frame {
            key,
            rtp_ts: ts,
            body,
        });
    }
}

/// Payload budget per RTP packet (1200 + headers stays under common MTUs).
pub const RTP_PAYLOAD: usize = 1200;

/// FLV video tags (AVCC) into H264 RTP packets (RFC 6184, packetization
/// mode 1): SPS and PPS in a STAP-A before every IDR, NALs that fit sent
/// whole, larger ones as FU-A; the marker bit ends each access unit.
pub struct Packetizer {
    pub ssrc: u32,
    pub pt: u8,
    seq: u16,
    sps: Vec<u8>,
    pps: Vec<u8>,
}

impl Packetizer {
    pub fn new(ssrc: u32, pt: u8) -> Packetizer {
        Packetizer {
            ssrc,
            pt,
            seq: 0,
            sps: Vec::new(),
            pps: Vec::new(),
        }
    }

    fn packet(&mut self, ts: u32, marker: bool, payload: &[&[u8]], out: &mut Vec<Vec<u8>>) {
        let len: usize = payload.iter().map(|p| p.len()).sum();
        let mut p = Vec::with_capacity(12 + len);
        p.extend_from_slice(&[0x80, self.pt | if marker { 0x80 } else { 0 }]);
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        for part in payload {
            p.extend_from_slice(part);
        }
        self.seq = self.seq.wrapping_add(1);
        out.push(p);
    }

    /// One FLV video tag body at `ts` (90 kHz); appends whole RTP packets.
    /// Returns false for tags that carry nothing to send (config, junk).
    pub fn push(&mut self, body: &[u8], ts: u32, out: &mut Vec<Vec<u8>>) -> bool {
        if body.len() < 5 || body[0] & 0x0f != 7 {
            return false;
        }
        let key = body[0] >> 4 == 1;
        if body[1] == 0 {
            self.read_config(&body[5..]);
            return false;
        }
        if body[1] != 1 {
            return false;
        }
        let mut nals = Vec::new();
        let mut p = &body[5..];
        while p.len() >= 4 {
            let n = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
            if n == 0 || p.len() < 4 + n {
                break;
            }
            let nal = &p[4..4 + n];
            if !matches!(nal[0] & 0x1f, NAL_SPS | NAL_PPS | NAL_AUD) {
                nals.push(nal);
            }
            p = &p[4 + n..];
        }
        if nals.is_empty() {
            return false;
        }
        if key && !self.sps.is_empty() && !self.pps.is_empty() {
            let (sps, pps) = (self.sps.clone(), self.pps.clone());
            let nri = sps[0] & 0x60;
            self.packet(
                ts,
                false,
                &[
                    &[nri | STAP_A],
                    &(sps.len() as u16).to_be_bytes(),
                    &sps,
                    &(pps.len() as u16).to_be_bytes(),
                    &pps,
                ],
                out,
            );
        }
        let last = nals.len() - 1;
        for (i, nal) in nals.into_iter().enumerate() {
            let end_of_au = i == last;
            if nal.len() <= RTP_PAYLOAD {
                self.packet(ts, end_of_au, &[nal], out);
                continue;
            }
            let indicator = (nal[0] & 0xe0) | FU_A;
            let typ = nal[0] & 0x1f;
            let chunks: Vec<&[u8]> = nal[1..].chunks(RTP_PAYLOAD - 2).collect();
            let n = chunks.len();
            for (k, c) in chunks.into_iter().enumerate() {
                let header =
                    typ | if k == 0 { 0x80 } else { 0 } | if k == n - 1 { 0x40 } else { 0 };
                self.packet(ts, end_of_au && k == n - 1, &[&[indicator, header], c], out);
            }
        }
        true
    }

    /// AVCDecoderConfigurationRecord: keep the first SPS and PPS.
    fn read_config(&mut self, rec: &[u8]) {
        if rec.len() < 8 {
            return;
        }
        let mut p = &rec[5..];
        let nsps = (p[0] & 0x1f) as usize;
        p = &p[1..];
        for i in 0..nsps {
            if p.len() < 2 {
                return;
            }
            let n = u16::from_be_bytes([p[0], p[1]]) as usize;
            if p.len() < 2 + n || n == 0 {
                return;
            }
            if i == 0 {
                self.sps = p[2..2 + n].to_vec();
            }
            p = &p[2 + n..];
        }
        if p.is_empty() {
            return;
        }
        let npps = p[0] as usize;
        p = &p[1..];
        if npps > 0 && p.len() >= 2 {
            let n = u16::from_be_bytes([p[0], p[1]]) as usize;
            if n > 0 && p.len() >= 2 + n {
                self.pps = p[2..2 + n].to_vec();
            }
        }
    }
}

/// The body of the `h264_rtp` fuzz target: junk RTP payloads never panic
/// the depacketizer, and what it emits packetizes back.
pub fn fuzz_depacketize(data: &[u8]) {
    let mut d = Depacketizer::new();
    let mut pk = Packetizer::new(1, 96);
    let mut out = Vec::new();
    let mut rtp = Vec::new();
    for (i, part) in data.chunks(61).enumerate() {
        d.push(i as u16, (i / 3) as u32, i % 3 == 2, part, &mut out);
        for o in out.drain(..) {
            match o {
                Out::Config(b) | Out::Frame { body: b, .. } => {
                    pk.push(&b, 0, &mut rtp);
                }
                Out::NeedKeyframe => {}
            }
        }
    }
}

/// The body of the `flv_video` fuzz target: any FLV video tag body (from an
/// RTMP publisher) packetizes without panicking, within the payload budget.
pub fn fuzz_flv(data: &[u8]) {
    let mut pk = Packetizer::new(1, 96);
    let mut rtp = Vec::new();
    for body in data.split(|&b| b == 0xfe) {
        pk.push(body, 0, &mut rtp);
        assert!(rtp.iter().all(|p| p.len() <= 12 + 2 + RTP_PAYLOAD));
        rtp.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0x67, 0x42, 0xe0, 0x1f, 0xaa];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    fn stap(nals: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![STAP_A];
        for n in nals {
            p.extend_from_slice(&(n.len() as u16).to_be_bytes());
            p.extend_from_slice(n);
        }
        p
    }

    fn fu(nal: &[u8], parts: usize) -> Vec<Vec<u8>> {
        let body = &nal[1..];
        let size = body.len().div_ceil(parts);
        body.chunks(size)
            .enumerate()
            .map(|(i, c)| {
                let start = if i == 0 { 0x80 } else { 0 };
                let end = if (i + 1) * size >= body.len() {
                    0x40
                } else {
                    0
                };
                let mut p = vec![(nal[0] & 0xe0) | FU_A, start | end | (nal[0] & 0x1f)];
                p.extend_from_slice(c);
                p
            })
            .collect()
    }

    #[test]
    fn stap_a_and_fu_a_become_avcc_frames_with_a_config() {
        let idr: Vec<u8> = [0x65].iter().chain([7u8; 3000].iter()).copied().collect();
        let mut d = Depacketizer::new();
        let mut out = Vec::new();
        d.push(1, 9000, false, &stap(&[SPS, PPS]), &mut out);
        let frags = fu(&idr, 3);
        for (i, f) in frags.iter().enumerate() {
            d.push(2 + i as u16, 9000, i == frags.len() - 1, f, &mut out);
        }
        d.push(5, 12000, true, &[0x41, 1, 2, 3], &mut out);
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0], Out::Config(config_tag(SPS, PPS)));
        let Out::Frame { key, rtp_ts, body } = &out[1] else {
            panic!()
        };
        assert!(*key && *rtp_ts == 9000);
        assert_eq!(&body[..5], &[0x17, 1, 0, 0, 0]);
        assert_eq!(&body[5..9], &(idr.len() as u32).to_be_bytes());
        assert_eq!(&body[9..], &idr[..]);
        let Out::Frame { key, body, .. } = &out[2] else {
            panic!()
        };
        assert!(!*key);
        assert_eq!(&body[..], &[0x27, 1, 0, 0, 0, 0, 0, 0, 4, 0x41, 1, 2, 3]);
    }

    #[test]
    fn a_loss_drops_frames_until_the_next_idr_and_asks_for_one() {
        let mut d = Depacketizer::new();
        let mut out = Vec::new();
        d.push(1, 0, true, &stap(&[SPS, PPS, &[0x65, 1]]), &mut out);
        d.push(2, 3000, true, &[0x41, 2], &mut out);
        out.clear();
        d.push(4, 6000, true, &[0x41, 3], &mut out); // 3 lost
        d.push(5, 9000, true, &[0x41, 4], &mut out);
        assert_eq!(out, vec![Out::NeedKeyframe]);
        d.push(6, 12000, true, &stap(&[SPS, PPS, &[0x65, 5]]), &mut out);
        assert!(matches!(out.last(), Some(Out::Frame { key: true, .. })));
        // Fragments without their start are a loss too.
        out.clear();
        d.push(7, 15000, true, &[FU_A, 0x45, 9, 9], &mut out);
        assert_eq!(out, vec![Out::NeedKeyframe]);
    }

    /// FLV → RTP → FLV gives back the same frames, with the config first.
    #[test]
    fn packetizer_round_trips_through_the_depacketizer() {
        let idr: Vec<u8> = [0x65].iter().chain([3u8; 5000].iter()).copied().collect();
        let mut frame = vec![0x17, 1, 0, 0, 0];
        for nal in [&[0x09u8, 0xf0][..], SPS, PPS, &idr] {
            frame.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            frame.extend_from_slice(nal);
        }
        let mut p = Packetizer::new(7, 96);
        let mut rtp = Vec::new();
        assert!(!p.push(&config_tag(SPS, PPS), 0, &mut rtp));
        assert!(p.push(&frame, 9000, &mut rtp));
        assert!(rtp.iter().all(|x| x.len() <= 12 + RTP_PAYLOAD));
        assert_eq!(rtp[0][12] & 0x1f, STAP_A, "parameter sets first");
        assert_eq!(
            rtp.iter().filter(|x| x[1] & 0x80 != 0).count(),
            1,
            "one marker"
        );
        let mut d = Depacketizer::new();
        let mut out = Vec::new();
        for x in &rtp {
            let h = crate::rtp::RtpHeader::parse(x).unwrap();
            d.push(h.seq_no, h.timestamp, h.marker, &x[12..], &mut out);
        }
        assert_eq!(out[0], Out::Config(config_tag(SPS, PPS)));
        let Out::Frame { key, body, .. } = &out[1] else {
            panic!("{out:?}")
        };
        assert!(*key);
        assert_eq!(&body[9..], &idr[..], "the IDR survives FU-A");
    }

    #[test]
    fn nothing_before_the_first_idr_and_junk_is_harmless() {
        let mut d = Depacketizer::new();
        let mut out = Vec::new();
        d.push(1, 0, true, &[0x41, 1], &mut out);
        assert!(out.is_empty());
        for seed in 0..500u32 {
            let p: Vec<u8> = (0..40u32)
                .map(|i| (i.wrapping_mul(seed).wrapping_add(seed >> 3)) as u8)
                .collect();
            d.push(seed as u16 + 2, seed, seed % 3 == 0, &p, &mut out);
        }
        let junk: Vec<u8> = (0..5000u32).map(|i| ((i * 7919) >> 3) as u8).collect();
        fuzz_depacketize(&junk);
        let mut flv = vec![0x17, 1, 0, 0, 0, 0, 0, 0x10, 0, 0x65];
        flv.extend_from_slice(&junk);
        fuzz_flv(&flv);
        fuzz_flv(&[0x17, 0, 0, 0, 0, 1, 0x42, 0, 0x1f, 0xff, 0xe1, 0, 200]);
    }
}
