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
//!
//! The H264 module of [`crate::codec`]: nothing outside `codec/` calls it
//! but the re-encoder of H264 with B-frames (`reencode.rs`), the fuzz
//! targets, tests and benches; the rest asks a [`super::VideoCodec`].

use super::{Out, Pushed, RtpWriter, RTP_PAYLOAD};

/// FLV's codec id for H264 (AVC): the low 4 bits of a video tag's first byte.
pub const FLV_CODEC_ID: u8 = 7;

const STAP_A: u8 = 24;
const FU_A: u8 = 28;
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;

/// Whether an FLV video tag body is legacy H264 (codec id 7), not an
/// E-RTMP body, whose low bits are a packet type (7: ModEx).
pub fn is_flv(body: &[u8]) -> bool {
    body.first()
        .is_some_and(|b| b & 0x80 == 0 && b & 0x0f == FLV_CODEC_ID)
}

/// Largest access unit assembled (bounds memory against a hostile sender).
pub const MAX_ACCESS_UNIT: usize = 4 << 20;

/// Largest SPS or PPS accepted. Real ones are tens of bytes (a PPS with
/// scaling lists a few hundred); anything larger is hostile or broken, and
/// this bound keeps each one sendable as a single RTP packet.
pub const MAX_PARAMETER_SET: usize = RTP_PAYLOAD;

/// Whether `sps` can be used: the NAL header and the three bytes the
/// AVCDecoderConfigurationRecord copies (profile_idc, constraint flags,
/// level_idc; ITU-T H.264 §7.3.2.1.1) are there, within
/// [`MAX_PARAMETER_SET`].
pub fn valid_sps(sps: &[u8]) -> bool {
    (4..=MAX_PARAMETER_SET).contains(&sps.len()) && sps[0] & 0x1f == NAL_SPS
}

/// Whether `pps` can be used: a NAL header and at least one byte of
/// content, within [`MAX_PARAMETER_SET`].
pub fn valid_pps(pps: &[u8]) -> bool {
    (2..=MAX_PARAMETER_SET).contains(&pps.len()) && pps[0] & 0x1f == NAL_PPS
}

/// H264 RTP payloads into FLV video tags ([`Out`]; its `Config` holds an
/// AVCDecoderConfigurationRecord, `BadParameterSet` is an SPS or PPS too
/// short to hold the fields the decoder configuration needs, or too long).
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

/// Whether an H264 RTP payload (RFC 6184) begins a keyframe: an SPS, an
/// IDR slice, a STAP-A opening with one, or the first fragment of an IDR.
/// What a GOP replay starts from.
pub fn starts_keyframe(payload: &[u8]) -> bool {
    let key = |t: u8| matches!(t & 0x1f, NAL_SPS | NAL_IDR);
    match payload {
        [h, ..] if h & 0x1f == STAP_A => payload.get(3).is_some_and(|&n| key(n)),
        [h, fu, ..] if h & 0x1f == FU_A => fu & 0x80 != 0 && key(*fu),
        [h, ..] => key(*h),
        [] => false,
    }
}

/// AVCDecoderConfigurationRecord (ISO 14496-15 §5.2.4.1) in an FLV
/// sequence-header tag body; `None` unless [`valid_sps`] and [`valid_pps`].
pub fn config_tag(sps: &[u8], pps: &[u8]) -> Option<Vec<u8>> {
    if !valid_sps(sps) || !valid_pps(pps) {
        return None;
    }
    let mut b = vec![0x17, 0, 0, 0, 0, 1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    b.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    b.extend_from_slice(sps);
    b.push(1);
    b.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    b.extend_from_slice(pps);
    Some(b)
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
            1..=23 => self.nal(payload, out),
            STAP_A => {
                let mut p = &payload[1..];
                while p.len() >= 2 {
                    let n = u16::from_be_bytes([p[0], p[1]]) as usize;
                    if n == 0 || p.len() < 2 + n {
                        break;
                    }
                    self.nal(&p[2..2 + n], out);
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
                        self.nal(&nal, out);
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

    /// One whole NAL unit (never empty: every caller checked).
    fn nal(&mut self, nal: &[u8], out: &mut Vec<Out>) {
        let Some(&header) = nal.first() else { return };
        match header & 0x1f {
            // Checked on arrival, so the decoder configuration can use them.
            NAL_SPS if valid_sps(nal) => self.sps = nal.to_vec(),
            NAL_PPS if valid_pps(nal) => self.pps = nal.to_vec(),
            NAL_SPS | NAL_PPS => out.push(Out::BadParameterSet),
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
            // Still no IDR: the request was lost, or the sender ignored it
            // (Chromium does while it starts up). Ask again with every
            // frame; the router sends at most one request a second.
            out.push(Out::NeedKeyframe);
            return;
        }
        if key {
            if let Some(config) = config_tag(&self.sps, &self.pps) {
                self.config_sent = true;
                out.push(Out::Config(config));
            }
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

/// FLV video tags (AVCC) into H264 RTP packets (RFC 6184, packetization
/// mode 1): SPS and PPS in a STAP-A before every IDR, NALs that fit sent
/// whole, larger ones as FU-A; the marker bit ends each access unit.
pub struct Packetizer {
    pub(super) rtp: RtpWriter,
    sps: Vec<u8>,
    pps: Vec<u8>,
}

impl Packetizer {
    pub fn new(rtp: RtpWriter) -> Packetizer {
        Packetizer {
            rtp,
            sps: Vec::new(),
            pps: Vec::new(),
        }
    }

    fn packet(&mut self, ts: u32, marker: bool, payload: &[&[u8]], out: &mut Vec<Vec<u8>>) {
        self.rtp.packet(ts, marker, payload, out);
    }

    /// One FLV video tag body at `ts` (90 kHz); appends whole RTP packets,
    /// each at most `12 + RTP_PAYLOAD` bytes.
    pub fn push(&mut self, body: &[u8], ts: u32, out: &mut Vec<Vec<u8>>) -> Pushed {
        if body.len() < 5 || !is_flv(body) {
            return Pushed::Nothing;
        }
        let key = body[0] >> 4 == 1;
        if body[1] == 0 {
            return if self.read_config(&body[5..]) {
                Pushed::Nothing
            } else {
                Pushed::BadConfig
            };
        }
        if body[1] != 1 {
            return Pushed::Nothing;
        }
        let nals: Vec<&[u8]> = avcc_nals(&body[5..])
            .filter(|nal| !matches!(nal[0] & 0x1f, NAL_SPS | NAL_PPS | NAL_AUD))
            .collect();
        if nals.is_empty() {
            return Pushed::Nothing;
        }
        if key && !self.sps.is_empty() && !self.pps.is_empty() {
            let (sps, pps) = (std::mem::take(&mut self.sps), std::mem::take(&mut self.pps));
            if 1 + 2 + sps.len() + 2 + pps.len() <= RTP_PAYLOAD {
                let nri = sps[0] & 0x60;
                let (sps_len, pps_len) = (
                    (sps.len() as u16).to_be_bytes(),
                    (pps.len() as u16).to_be_bytes(),
                );
                self.packet(
                    ts,
                    false,
                    &[&[nri | STAP_A], &sps_len, &sps, &pps_len, &pps],
                    out,
                );
            } else {
                // Too large together for one STAP-A: each alone (each fits,
                // `read_config` bounds them at MAX_PARAMETER_SET).
                self.packet(ts, false, &[&sps], out);
                self.packet(ts, false, &[&pps], out);
            }
            (self.sps, self.pps) = (sps, pps);
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
        Pushed::Packets
    }

    /// Keeps the record's first SPS and PPS if both are usable; false
    /// (nothing kept) if not.
    fn read_config(&mut self, rec: &[u8]) -> bool {
        match parameter_sets(rec) {
            Some((sps, pps)) => {
                self.sps = sps.to_vec();
                self.pps = pps.to_vec();
                true
            }
            None => false,
        }
    }
}

/// The NAL units of an AVCC payload (4-byte lengths, as in an FLV video
/// tag after its 5-byte header), up to the first malformed one.
pub fn avcc_nals(mut p: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (len, rest) = p.split_first_chunk::<4>()?;
        let n = u32::from_be_bytes(*len) as usize;
        if n == 0 || rest.len() < n {
            return None;
        }
        let (nal, rest) = rest.split_at(n);
        p = rest;
        Some(nal)
    })
}

/// The first SPS and PPS of an AVCDecoderConfigurationRecord (ISO 14496-15
/// §5.2.4.1), if both are there and usable ([`valid_sps`], [`valid_pps`]).
pub fn parameter_sets(rec: &[u8]) -> Option<(&[u8], &[u8])> {
    if rec.len() < 8 {
        return None;
    }
    let mut p = &rec[5..];
    let nsps = (p[0] & 0x1f) as usize;
    p = &p[1..];
    let mut sps = None;
    for _ in 0..nsps {
        let (set, rest) = length_prefixed(p)?;
        sps = sps.or(Some(set));
        p = rest;
    }
    let (&npps, rest) = p.split_first()?;
    let pps = if npps > 0 {
        length_prefixed(rest)
    } else {
        None
    };
    match (sps, pps) {
        (Some(sps), Some((pps, _))) if valid_sps(sps) && valid_pps(pps) => Some((sps, pps)),
        _ => None,
    }
}

/// A 16-bit length-prefixed, non-empty field at the start of `p`, and what follows it.
fn length_prefixed(p: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = p.split_first_chunk::<2>()?;
    let n = u16::from_be_bytes(*len) as usize;
    (n > 0 && rest.len() >= n).then(|| rest.split_at(n))
}

/// (width, height, frames per second if its VUI says) of the first SPS of
/// an AVCDecoderConfigurationRecord (ISO 14496-15 §5.2.4.1), read by
/// `h264-reader` (ITU-T H.264 §7.3.2.1.1).
pub fn picture(rec: &[u8]) -> Option<(u32, u32, Option<f64>)> {
    use h264_reader::nal::sps::SeqParameterSet;
    use h264_reader::rbsp::{decode_nal, BitReader};
    if rec.len() < 8 || rec[5] & 0x1f == 0 {
        return None;
    }
    let len = u16::from_be_bytes([rec[6], rec[7]]) as usize;
    let nal = rec.get(8..8 + len)?;
    let rbsp = decode_nal(nal).ok()?;
    let sps = SeqParameterSet::from_bits(BitReader::new(&rbsp[..])).ok()?;
    let (w, h) = sps.pixel_dimensions().ok()?;
    let fps = sps
        .fps()
        .filter(|f| f.is_finite() && *f > 0.0 && *f <= 240.0);
    Some((w, h, fps))
}

/// The NAL units of an Annex B access unit (3- or 4-byte start codes).
pub fn annexb_nals(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let starts: Vec<usize> = (0..data.len().saturating_sub(2))
        .filter(|&i| data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1)
        .map(|i| i + 3)
        .collect();
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&s| {
            let e = s - 3;
            if e > 0 && data[e - 1] == 0 {
                e - 1
            } else {
                e
            }
        })
        .chain(std::iter::once(data.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .map(move |(s, e)| &data[s..e.max(s)])
        .filter(|n| !n.is_empty())
}

/// An SPS and its PPS.
pub type Sets = (Vec<u8>, Vec<u8>);

/// An encoded access unit (Annex B) as an FLV video tag body, and the
/// parameter sets it carried (x264 repeats them before each IDR).
pub fn flv_body(annexb: &[u8], key: bool) -> (Option<Sets>, Option<Vec<u8>>) {
    let (mut sps, mut pps) = (None, None);
    let mut body = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
    for nal in annexb_nals(annexb) {
        match nal[0] & 0x1f {
            NAL_SPS => sps = Some(nal.to_vec()),
            NAL_PPS => pps = Some(nal.to_vec()),
            NAL_AUD => {}
            _ => {
                body.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                body.extend_from_slice(nal);
            }
        }
    }
    let sets = sps.zip(pps);
    (sets, (body.len() > 5).then_some(body))
}

/// The body of the `h264_rtp` fuzz target: junk RTP payloads never panic
/// the depacketizer, and what it emits packetizes back.
pub fn fuzz_depacketize(data: &[u8]) {
    let mut d = Depacketizer::new();
    let mut pk = Packetizer::new(RtpWriter::new(1, 96));
    let mut out = Vec::new();
    let mut rtp = Vec::new();
    for (i, part) in data.chunks(61).enumerate() {
        d.push(i as u16, (i / 3) as u32, i % 3 == 2, part, &mut out);
        for o in out.drain(..) {
            match o {
                Out::Config(b) | Out::Frame { body: b, .. } => {
                    pk.push(&b, 0, &mut rtp);
                }
                Out::NeedKeyframe | Out::BadParameterSet | Out::Coded { .. } => {}
            }
        }
    }
}

/// The body of the `avc_config` fuzz target: any SPS/PPS pair builds a
/// decoder configuration or is refused, and a built one reads back (as an
/// RTMP publisher's) into the same pair, packetized within the budget.
pub fn fuzz_config(data: &[u8]) {
    let split = data.first().map_or(0, |&b| b as usize).min(data.len());
    let (sps, pps) = data.split_at(split);
    let Some(tag) = config_tag(sps, pps) else {
        assert!(!valid_sps(sps) || !valid_pps(pps));
        return;
    };
    let mut pk = Packetizer::new(RtpWriter::new(1, 96));
    let mut rtp = Vec::new();
    assert_eq!(pk.push(&tag, 0, &mut rtp), Pushed::Nothing);
    assert_eq!((&pk.sps[..], &pk.pps[..]), (sps, pps));
    assert_eq!(
        pk.push(&[0x17, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, 1], 0, &mut rtp),
        Pushed::Packets
    );
    assert!(rtp.iter().all(|p| p.len() <= 12 + RTP_PAYLOAD));
}

/// The body of the `flv_video` fuzz target: any FLV video tag body (from an
/// RTMP publisher) packetizes without panicking, within the payload budget.
pub fn fuzz_flv(data: &[u8]) {
    let mut pk = Packetizer::new(RtpWriter::new(1, 96));
    let mut rtp = Vec::new();
    for body in data.split(|&b| b == 0xfe) {
        pk.push(body, 0, &mut rtp);
        assert!(rtp.iter().all(|p| p.len() <= 12 + RTP_PAYLOAD));
        rtp.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_starts_are_told_in_every_packetization() {
        assert!(starts_keyframe(&[0x67, 0x42]), "an SPS");
        assert!(starts_keyframe(&[0x65, 0x88]), "an IDR slice");
        assert!(
            starts_keyframe(&[0x78, 0, 10, 0x67]),
            "a STAP-A opening with an SPS"
        );
        assert!(starts_keyframe(&[0x7c, 0x85, 0]), "an IDR's first fragment");
        assert!(
            !starts_keyframe(&[0x7c, 0x45, 0]),
            "an IDR's later fragment"
        );
        assert!(
            !starts_keyframe(&[0x7c, 0x81, 0]),
            "a P slice's first fragment"
        );
        assert!(!starts_keyframe(&[0x41, 0x9a]), "a P slice");
        assert!(
            !starts_keyframe(&[0x78, 0]) && !starts_keyframe(&[]),
            "truncated"
        );
    }

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
    fn annex_b_splits_on_both_start_codes() {
        let au = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5,
        ];
        let nals: Vec<&[u8]> = annexb_nals(&au).collect();
        assert_eq!(nals, [&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4, 5]]);
        let (sets, body) = flv_body(&au, true);
        assert_eq!(sets, Some((vec![0x67, 1, 2], vec![0x68, 3])));
        assert_eq!(body.unwrap(), [0x17, 1, 0, 0, 0, 0, 0, 0, 3, 0x65, 4, 5]);
    }

    #[test]
    fn avcc_stops_at_a_malformed_length() {
        let p = [0, 0, 0, 2, 0x41, 1, 0, 0, 0, 9, 0x41];
        let nals: Vec<&[u8]> = avcc_nals(&p).collect();
        assert_eq!(nals, [&[0x41, 1][..]]);
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
        assert_eq!(out[0], Out::Config(config_tag(SPS, PPS).unwrap()));
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
        // Asked at the loss, and again with every frame until an IDR (a
        // request can be lost or ignored; the router sends one a second).
        assert_eq!(out, vec![Out::NeedKeyframe; 3]);
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
        let mut p = Packetizer::new(RtpWriter::new(7, 96));
        let mut rtp = Vec::new();
        assert_eq!(
            p.push(&config_tag(SPS, PPS).unwrap(), 0, &mut rtp),
            Pushed::Nothing
        );
        assert_eq!(p.push(&frame, 9000, &mut rtp), Pushed::Packets);
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
        assert_eq!(out[0], Out::Config(config_tag(SPS, PPS).unwrap()));
        let Out::Frame { key, body, .. } = &out[1] else {
            panic!("{out:?}")
        };
        assert!(*key);
        assert_eq!(&body[9..], &idr[..], "the IDR survives FU-A");
    }

    /// A 1-byte SPS once panicked the shard as soon as an RTMP player was in
    /// the room (the decoder configuration read `sps[1..=3]`).
    #[test]
    fn an_sps_too_short_for_its_fields_is_refused_and_counted() {
        let mut d = Depacketizer::new();
        let mut out = Vec::new();
        d.push(1, 0, true, &stap(&[&[0x67], PPS, &[0x65, 1]]), &mut out);
        assert_eq!(out, vec![Out::BadParameterSet], "no config, no frame");
        out.clear();
        // A later good SPS starts the stream.
        d.push(2, 3000, true, &stap(&[SPS, PPS, &[0x65, 2]]), &mut out);
        assert_eq!(out[0], Out::Config(config_tag(SPS, PPS).unwrap()));
        assert!(config_tag(&[0x67, 0x42], PPS).is_none());
        assert!(config_tag(SPS, &[0x68]).is_none());
        let huge = [&[0x67u8, 0x42, 0, 0x1f][..], &[0; MAX_PARAMETER_SET]].concat();
        assert!(!valid_sps(&huge));
    }

    /// An RTMP publisher's config with large parameter sets once made a
    /// STAP-A over a send slot; now each set goes alone when they do not
    /// fit together, and sets over MAX_PARAMETER_SET are refused.
    #[test]
    fn parameter_sets_never_make_a_packet_over_the_budget() {
        let big_sps = [&[0x67u8, 0x64, 0, 0x28][..], &[0xaa; 700]].concat();
        let big_pps = [&[0x68u8][..], &[0xbb; 700]].concat();
        let idr_frame = |nal: &[u8]| {
            let mut f = vec![0x17, 1, 0, 0, 0];
            f.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            f.extend_from_slice(nal);
            f
        };
        let mut p = Packetizer::new(RtpWriter::new(7, 96));
        let mut rtp = Vec::new();
        let cfg = config_tag(&big_sps, &big_pps).unwrap();
        assert_eq!(p.push(&cfg, 0, &mut rtp), Pushed::Nothing);
        assert_eq!(
            p.push(&idr_frame(&[0x65, 1, 2]), 0, &mut rtp),
            Pushed::Packets
        );
        assert_eq!(rtp.len(), 3, "SPS, PPS, IDR each alone");
        assert!(rtp.iter().all(|x| x.len() <= 12 + RTP_PAYLOAD));
        assert_eq!(&rtp[0][12..], &big_sps[..]);
        assert_eq!(&rtp[1][12..], &big_pps[..]);
        // Over the bound: refused, the last good config stays.
        let over = [&[0x67u8, 0x64, 0, 0x28][..], &[0xcc; 60_000]].concat();
        let mut rec = vec![0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x28, 0xff, 0xe1];
        rec.extend_from_slice(&(over.len() as u16).to_be_bytes());
        rec.extend_from_slice(&over);
        rec.extend_from_slice(&[1, 0, 2, 0x68, 1]);
        assert_eq!(p.push(&rec, 0, &mut rtp), Pushed::BadConfig);
        rtp.clear();
        p.push(&idr_frame(&[0x65, 3]), 0, &mut rtp);
        assert_eq!(&rtp[0][12..], &big_sps[..], "the good config is kept");
        // A 1-byte SPS in a config is refused the same way.
        let mut tiny = vec![0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x28, 0xff, 0xe1, 0, 1, 0x67];
        tiny.extend_from_slice(&[1, 0, 2, 0x68, 1]);
        assert_eq!(p.push(&tiny, 0, &mut rtp), Pushed::BadConfig);
    }

    #[test]
    fn nothing_before_the_first_idr_and_junk_is_harmless() {
        let mut d = Depacketizer::new();
        let mut out = Vec::new();
        d.push(1, 0, true, &[0x41, 1], &mut out);
        assert_eq!(out, vec![Out::NeedKeyframe], "no frame, a request");
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
