//! RTP header extensions read on the media path (RFC 8285 one-byte
//! headers): the RFC 6464 audio level, and the raw value of any id the
//! congestion feedback reads (transport-cc sequence numbers, abs-send-time).

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
}
