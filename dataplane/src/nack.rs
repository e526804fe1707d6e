//! Retransmission cache of one published video stream (RFC 4585 NACK).
//!
//! The last [`SLOTS`] plaintext packets, indexed by sequence number modulo
//! the slot count. A subscriber's NACK is answered from here without a
//! round trip to the publisher; what is no longer here goes on to the
//! publisher. One fixed allocation per publisher, a copy per packet.

/// Packets kept: ~1.2 s of a 1000-packet/s stream, beyond any useful NACK.
pub const SLOTS: usize = 1024;
/// Largest packet cached (an RTP packet on a 1500-byte MTU).
pub const MAX_PACKET: usize = 1500;

pub struct NackCache {
    /// `(valid, seq, len)` per slot.
    meta: Box<[(bool, u16, u16)]>,
    data: Box<[u8]>,
}

impl Default for NackCache {
    fn default() -> Self {
        NackCache {
            meta: vec![(false, 0, 0); SLOTS].into_boxed_slice(),
            data: vec![0; SLOTS * MAX_PACKET].into_boxed_slice(),
        }
    }
}

impl NackCache {
    /// Keeps a copy of `pkt` (an RTP packet with sequence number `seq`).
    pub fn insert(&mut self, seq: u16, pkt: &[u8]) {
        if pkt.len() > MAX_PACKET {
            return;
        }
        let i = seq as usize % SLOTS;
        self.meta[i] = (true, seq, pkt.len() as u16);
        self.data[i * MAX_PACKET..i * MAX_PACKET + pkt.len()].copy_from_slice(pkt);
    }

    /// The cached packet with sequence number `seq`, if still held.
    pub fn get(&self, seq: u16) -> Option<&[u8]> {
        let i = seq as usize % SLOTS;
        match self.meta[i] {
            (true, s, len) if s == seq => {
                Some(&self.data[i * MAX_PACKET..i * MAX_PACKET + len as usize])
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
}
