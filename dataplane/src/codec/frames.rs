//! Whole frames from RTP packets, for the codecs FLV does not carry (VP8,
//! VP9, AV1): their depacketizers hand the transcoder one coded frame at a
//! time ([`Out::Coded`]), in the codec's own bitstream, and this is the
//! bookkeeping they share.
//!
//! ```text
//! packet: seq, ts, begins a frame? (the codec's descriptor says), marker
//!   ─▶ a gap in seq: the frame in progress is dropped, and so is every
//!      frame until the next keyframe (the decoder would show garbage:
//!      its references are gone); a keyframe is asked for
//!   ─▶ the frame's bytes, appended by the codec's depacketizer
//!   ─▶ the marker ends it: Out::Coded { key, rtp_ts, frame }
//! ```
//!
//! Packets come here in order: the bridge's reorder buffer before it
//! waits for gaps and NACKs them, so a gap here is a loss it gave up on.

use super::Out;

/// Largest frame gathered (bounds memory against a hostile sender): a
/// 1080p keyframe of a browser's encoder is a few hundred kilobytes.
pub const MAX_FRAME: usize = 4 << 20;

/// One publisher's frame in progress, and whether the decoder after it is
/// in step (a keyframe seen since the last loss).
#[derive(Default)]
pub struct Frames {
    next_seq: Option<u16>,
    /// A frame is being gathered, of this RTP time.
    open: Option<u32>,
    key: bool,
    /// A keyframe went out since the start or the last loss.
    synced: bool,
    /// The frame's bytes so far.
    pub frame: Vec<u8>,
}

impl Frames {
    /// A packet `seq` at RTP time `ts`: `begins` if the codec's descriptor
    /// says it begins a frame (`key`: a keyframe). True if its bytes belong
    /// to the frame in progress (the caller appends them, then calls
    /// [`end`](Self::end) at the marker); false if they are to be dropped.
    pub fn packet(
        &mut self,
        seq: u16,
        ts: u32,
        begins: bool,
        key: bool,
        out: &mut Vec<Out>,
    ) -> bool {
        if self.next_seq.is_some_and(|n| n != seq) {
            self.lost(out);
        }
        self.next_seq = Some(seq.wrapping_add(1));
        if begins {
            self.frame.clear();
            self.open = Some(ts);
            self.key = key;
            true
        } else {
            // The rest of a frame whose beginning was lost (or never sent)
            // is dropped with it.
            self.open == Some(ts)
        }
    }

    /// Whether a frame of RTP time `ts` is being gathered.
    pub fn in_frame(&self, ts: u32) -> bool {
        self.open == Some(ts)
    }

    /// The bytes appended made the frame larger than [`MAX_FRAME`]: it is
    /// dropped, as a loss.
    pub fn too_large(&self) -> bool {
        self.frame.len() > MAX_FRAME
    }

    /// Part of the frame could not be read: it is dropped, as a loss.
    pub fn lost(&mut self, out: &mut Vec<Out>) {
        self.open = None;
        self.frame.clear();
        if self.synced {
            self.synced = false;
            out.push(Out::NeedKeyframe);
        }
    }

    /// The marker bit: the frame is whole. It goes out if the decoder is
    /// in step; otherwise a keyframe is asked for again (with every frame:
    /// the router sends at most one request a second, and a request may
    /// have been lost or ignored, as Chromium does while it starts).
    pub fn end(&mut self, out: &mut Vec<Out>) {
        let Some(rtp_ts) = self.open.take() else {
            return;
        };
        if self.key {
            self.synced = true;
        }
        if !self.synced {
            self.frame.clear();
            out.push(Out::NeedKeyframe);
            return;
        }
        if self.frame.is_empty() {
            return;
        }
        out.push(Out::Coded {
            key: self.key,
            rtp_ts,
            frame: std::mem::take(&mut self.frame),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(f: &mut Frames, seq: u16, ts: u32, key: bool, parts: &[&[u8]], out: &mut Vec<Out>) {
        for (i, part) in parts.iter().enumerate() {
            if f.packet(seq + i as u16, ts, i == 0, key, out) {
                f.frame.extend_from_slice(part);
            }
        }
        f.end(out);
    }

    /// Frames before the first keyframe ask for one; from the keyframe on,
    /// each frame goes out whole; a loss drops the frame it hit and every
    /// frame until the next keyframe, asking for it once, then again with
    /// each frame dropped.
    #[test]
    fn frames_from_a_keyframe_on_and_none_across_a_loss() {
        let mut f = Frames::default();
        let mut out = Vec::new();
        frame(&mut f, 1, 100, false, &[b"p"], &mut out);
        assert_eq!(out, [Out::NeedKeyframe]);
        out.clear();
        frame(&mut f, 2, 200, true, &[b"k1", b"k2"], &mut out);
        frame(&mut f, 4, 300, false, &[b"d"], &mut out);
        let coded = |key, rtp_ts, frame: &[u8]| Out::Coded {
            key,
            rtp_ts,
            frame: frame.to_vec(),
        };
        assert_eq!(out, [coded(true, 200, b"k1k2"), coded(false, 300, b"d")]);
        out.clear();
        // Packet 6 lost: the frame of 5 and 6 is dropped, and the next one.
        assert!(f.packet(5, 400, true, false, &mut out));
        f.frame.extend_from_slice(b"x");
        assert!(!f.packet(7, 400, false, false, &mut out));
        f.end(&mut out);
        frame(&mut f, 8, 500, false, &[b"y"], &mut out);
        assert_eq!(out, [Out::NeedKeyframe, Out::NeedKeyframe]);
        out.clear();
        frame(&mut f, 9, 600, true, &[b"K"], &mut out);
        assert_eq!(out, [coded(true, 600, b"K")]);
    }

    /// A frame whose start was lost, or a packet of another frame's time
    /// inside it, never reaches the decoder.
    #[test]
    fn packets_without_their_frames_start_are_dropped() {
        let mut f = Frames::default();
        let mut out = Vec::new();
        frame(&mut f, 1, 100, true, &[b"k"], &mut out);
        out.clear();
        assert!(!f.packet(2, 200, false, false, &mut out), "no begin");
        f.end(&mut out);
        assert!(out.is_empty());
        assert!(f.packet(3, 300, true, false, &mut out));
        assert!(!f.packet(4, 301, false, false, &mut out), "another time");
    }
}
