//! Retransmission cache of one published video stream (RFC 4585 NACK).
//!
//! The last [`SLOTS`] plaintext packets, indexed by sequence number modulo
//! the slot count. A subscriber's NACK is answered from here without a
//! round trip to the publisher; what is no longer here goes on to the
//! publisher. A copy per packet; the slots' memory comes in chunks, each
//! allocated the first time a packet lands in it, so a publisher's first
//! packet does not zero 1.5 MB on the shard thread (with a hundred
//! publishers starting at once that stalled the shard for 300 ms), and no
//! allocation happens once the cache has gone round once.

/// Packets kept: ~1.2 s of a 1000-packet/s stream, beyond any useful NACK.
pub const SLOTS: usize = 1024;
/// Largest packet cached (an RTP packet on a 1500-byte MTU).
pub const MAX_PACKET: usize = 1500;

/// Slots per lazily allocated chunk (48 KB).
const CHUNK_SLOTS: usize = 32;

pub struct NackCache {
    /// `(valid, seq, len)` per slot.
    meta: Box<[(bool, u16, u16)]>,
    /// `CHUNK_SLOTS * MAX_PACKET` bytes each, once used.
    chunks: Box<[Option<Box<[u8]>>]>,
}

impl Default for NackCache {
    fn default() -> Self {
        NackCache {
            meta: vec![(false, 0, 0); SLOTS].into_boxed_slice(),
            chunks: (0..SLOTS / CHUNK_SLOTS).map(|_| None).collect(),
        }
    }
}

/// Where slot `i` lives: its chunk and its byte offset there.
fn locate(i: usize) -> (usize, usize) {
    (i / CHUNK_SLOTS, (i % CHUNK_SLOTS) * MAX_PACKET)
}

impl NackCache {
    /// Keeps a copy of `pkt` (an RTP packet with sequence number `seq`).
    pub fn insert(&mut self, seq: u16, pkt: &[u8]) {
        if pkt.len() > MAX_PACKET {
            return;
        }
        let i = seq as usize % SLOTS;
        let (chunk, at) = locate(i);
        let data = self.chunks[chunk]
            .get_or_insert_with(|| vec![0; CHUNK_SLOTS * MAX_PACKET].into_boxed_slice());
        data[at..at + pkt.len()].copy_from_slice(pkt);
        self.meta[i] = (true, seq, pkt.len() as u16);
    }

    /// The cached packet with sequence number `seq`, if still held.
    pub fn get(&self, seq: u16) -> Option<&[u8]> {
        let i = seq as usize % SLOTS;
        match self.meta[i] {
            (true, s, len) if s == seq => {
                let (chunk, at) = locate(i);
                let data = self.chunks[chunk].as_ref()?;
                Some(&data[at..at + len as usize])
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_slots_packets_across_wrap() {
        let mut c = NackCache::default();
        for k in 0..3000u32 {
            let seq = (65000 + k) as u16;
            c.insert(seq, &seq.to_be_bytes());
        }
        let last = (65000u32 + 2999) as u16;
        assert_eq!(c.get(last), Some(&last.to_be_bytes()[..]));
        let oldest = last.wrapping_sub(SLOTS as u16 - 1);
        assert!(c.get(oldest).is_some());
        assert!(c.get(oldest.wrapping_sub(1)).is_none(), "overwritten");
        assert!(c.get(last.wrapping_add(1)).is_none(), "never seen");
        c.insert(1, &[0; MAX_PACKET + 1]);
        assert!(c.get(1).is_none(), "oversized packets are not cached");
    }

    #[test]
    fn memory_comes_in_chunks_as_slots_are_used() {
        let mut c = NackCache::default();
        assert!(c.chunks.iter().all(Option::is_none));
        c.insert(5, &[1; MAX_PACKET]);
        assert_eq!(c.chunks.iter().filter(|k| k.is_some()).count(), 1);
        assert_eq!(c.get(5), Some(&[1; MAX_PACKET][..]));
        // Full-size neighbours do not overlap.
        c.insert(6, &[2; MAX_PACKET]);
        assert_eq!(c.get(5), Some(&[1; MAX_PACKET][..]));
        c.insert(CHUNK_SLOTS as u16, &[3]);
        assert_eq!(c.chunks.iter().filter(|k| k.is_some()).count(), 2);
        assert_eq!(c.get(CHUNK_SLOTS as u16), Some(&[3][..]));
    }
}
