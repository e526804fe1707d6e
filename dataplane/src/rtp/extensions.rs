//! RTP header extensions on the media path (RFC 8285 one-byte headers):
//! read, the RFC 6464 audio level and the raw value of any id the
//! congestion feedback reads (transport-cc sequence numbers, abs-send-time);
//! written, what a player is sent under its own ids (audio levels, our
//! transport-wide sequence numbers).

/// The RFC 6464 audio level in an RTP header's one-byte-header extension
/// block under id `id`: -dBov, 0 loudest, 127 silence. `None` without one
/// (or `id` 0: not negotiated).
pub fn audio_level(header: &[u8], id: u8) -> Option<u8> {
    // RFC 6464 §3: V bit, then the level in 7 bits.
    one_byte_extension(header, id)?.first().map(|v| v & 0x7f)
}

/// The value of extension `id` in an RTP header's one-byte-header
/// extension block (RFC 8285 §4.2, profile 0xBEDE); `None` without one (or
/// `id` 0: not negotiated).
pub fn one_byte_extension(header: &[u8], id: u8) -> Option<&[u8]> {
    if id == 0 || header.len() < 12 || header[0] & 0x10 == 0 {
        return None;
    }
    let at = 12 + 4 * (header[0] & 0x0f) as usize;
    if header.get(at..at + 2)? != [0xbe, 0xde] {
        return None;
    }
    let mut i = at + 4;
    while let Some(&b) = header.get(i) {
        if b == 0 {
            i += 1; // padding
            continue;
        }
        let (eid, len) = (b >> 4, (b & 0x0f) as usize + 1);
        if eid == 15 {
            return None; // RFC 8285: stop parsing
        }
        if eid == id {
            return header.get(i + 1..i + 1 + len);
        }
        i += 1 + len;
    }
    None
}

/// Writes RFC 6464 audio level `level` (-dBov: 0 loudest, 127 silence) as
/// one-byte extension `id` (RFC 8285) into RTP packet `pkt[..len]`; see
/// [`write_extensions`].
pub fn write_audio_level(pkt: &mut [u8], len: usize, id: u8, level: u8) -> usize {
    write_extensions(pkt, len, &[(id, &[level & 0x7f])])
}

/// Writes `elements` (id 1-14, 1-16 bytes of data each; others are left
/// out) as the one-byte extension block (RFC 8285) of RTP packet
/// `pkt[..len]`, whose buffer has room after it; returns the new length.
/// The publisher's packet may have come with a block (its elements
/// blanked to padding at ingress, the publisher's ids meaning nothing to a
/// player): the elements go in it, grown if they do not fit. Without one,
/// a block is inserted after the header. Either way the payload moves only
/// by what was added. Left as it is if there is no room or the block runs
/// past the packet.
pub fn write_extensions(pkt: &mut [u8], len: usize, elements: &[(u8, &[u8])]) -> usize {
    let valid = |e: &&(u8, &[u8])| (1..=14).contains(&e.0) && (1..=16).contains(&e.1.len());
    let bytes: usize = elements.iter().filter(valid).map(|e| 1 + e.1.len()).sum();
    if len < 12 || len > pkt.len() || bytes == 0 {
        return len;
    }
    let at = 12 + 4 * (pkt[0] & 0x0f) as usize;
    let words = bytes.div_ceil(4);
    let (have, grow) = if pkt[0] & 0x10 != 0 {
        let Some(w) = pkt.get(at + 2..at + 4) else {
            return len;
        };
        let have = u16::from_be_bytes([w[0], w[1]]) as usize;
        if at + 4 + 4 * have > len {
            return len;
        }
        (have, 4 * words.saturating_sub(have))
    } else {
        (0, 4 + 4 * words)
    };
    if at > len || len + grow > pkt.len() {
        return len;
    }
    if grow > 0 {
        let from = if pkt[0] & 0x10 != 0 {
            at + 4 + 4 * have
        } else {
            at
        };
        pkt.copy_within(from..len, from + grow);
    }
    let total = have.max(words);
    pkt[0] |= 0x10;
    pkt[at..at + 4].copy_from_slice(&[0xbe, 0xde, (total >> 8) as u8, total as u8]);
    let block = &mut pkt[at + 4..at + 4 + 4 * total];
    block.fill(0);
    let mut i = 0;
    for (id, data) in elements.iter().filter(valid) {
        block[i] = (id << 4) | (data.len() - 1) as u8;
        block[i + 1..i + 1 + data.len()].copy_from_slice(data);
        i += 1 + data.len();
    }
    len + grow
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_levels_are_read_from_one_byte_extensions() {
        // V=2, X=1; ext profile 0xBEDE, 2 words: mid (id 1, 2 bytes), then
        // padding, then audio level (id 3, 1 byte: V=1, level 42).
        let mut h = vec![0x90, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
        h.extend_from_slice(&[0xbe, 0xde, 0, 2, 0x11, b'a', b'b', 0, 0x30, 0x80 | 42, 0, 0]);
        assert_eq!(audio_level(&h, 3), Some(42));
        assert_eq!(audio_level(&h, 0), None, "not negotiated");
        assert_eq!(audio_level(&h, 2), None, "no such id");
        // Two-byte headers (0x1000) and truncated blocks give nothing.
        let mut two = h.clone();
        two[12..14].copy_from_slice(&[0x10, 0x00]);
        assert_eq!(audio_level(&two, 3), None);
        assert_eq!(audio_level(&h[..17], 3), None);
    }

    #[test]
    fn audio_levels_are_written_into_a_blanked_block_or_a_new_one() {
        // A blanked two-word block from the publisher: the level takes its
        // first element, the rest stays padding.
        let mut pkt = vec![0x90, 111, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        pkt.extend_from_slice(&[0xbe, 0xde, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, b'o', b'p']);
        let len = pkt.len();
        assert_eq!(write_audio_level(&mut pkt, len, 5, 30), len);
        assert_eq!(&pkt[12..20], &[0xbe, 0xde, 0, 2, 0x50, 30, 0, 0]);
        assert_eq!(audio_level(&pkt[..24], 5), Some(30));
        // No block: one is inserted, the payload moves 8 bytes on.
        let mut pkt = vec![
            0x80, 111, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, b'o', b'p', 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(write_audio_level(&mut pkt, 14, 1, 127), 22);
        let h = crate::rtp::RtpHeader::parse(&pkt[..22]).unwrap();
        assert_eq!((h.len, &pkt[h.len..22]), (20, &b"op"[..]));
        assert_eq!(audio_level(&pkt[..20], 1), Some(127));
        // No room after it, or a bad id: left alone.
        let mut short = pkt[..14].to_vec();
        short[0] = 0x80;
        assert_eq!(write_audio_level(&mut short, 14, 1, 10), 14);
        assert_eq!(write_audio_level(&mut pkt, 22, 15, 10), 22);
    }

    #[test]
    fn extensions_grow_a_small_block_and_leave_a_broken_one() {
        // A one-word block (a publisher's audio level, blanked) takes a
        // level and a transport-wide sequence number: it grows to two
        // words, the payload 4 bytes on.
        let mut pkt = vec![0x90, 111, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        pkt.extend_from_slice(&[0xbe, 0xde, 0, 1, 0, 0, 0, 0, b'o', b'p']);
        pkt.resize(40, 0);
        let len = write_extensions(&mut pkt, 22, &[(1, &[40]), (3, &[0x12, 0x34])]);
        assert_eq!(len, 26);
        let h = crate::rtp::RtpHeader::parse(&pkt[..len]).unwrap();
        assert_eq!((h.len, &pkt[h.len..len]), (24, &b"op"[..]));
        assert_eq!(audio_level(&pkt[..24], 1), Some(40));
        assert_eq!(crate::twcc::sequence(&pkt[..24], 3), Some(0x1234));
        // A block that says it runs past the packet: left alone.
        let mut bad = vec![
            0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0xbe, 0xde, 0, 9, 0, 0,
        ];
        bad.resize(60, 0);
        assert_eq!(write_extensions(&mut bad, 18, &[(3, &[1, 2])]), 18);
        // Nothing valid to write: as it was.
        assert_eq!(
            write_extensions(&mut pkt, len, &[(0, &[1]), (15, &[1])]),
            len
        );
    }
}
