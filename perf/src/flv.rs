//! The RTMP scenario's stream: a 1 Mbit/s H264 + AAC clip made once by
//! ffmpeg, read back as FLV tags, and a send-time stamp carried inside the
//! H264 access units (an SEI NAL unit) so a player can tell how long each
//! frame took through the server, whatever the server does to timestamps.

use std::path::{Path, PathBuf};
use std::process::Command;

/// FLV tag types (the same numbers as RTMP message types).
pub const AUDIO: u8 = 8;
pub const VIDEO: u8 = 9;

/// One FLV tag: its type, timestamp (ms) and body (the RTMP message payload).
pub struct Tag {
    pub kind: u8,
    pub ms: u32,
    pub body: Vec<u8>,
}

impl Tag {
    /// A sequence header (AVC decoder configuration or AAC specific config):
    /// sent once, before the frames.
    pub fn is_config(&self) -> bool {
        match self.kind {
            VIDEO => self.body.len() > 1 && self.body[1] == 0,
            AUDIO => self.body.len() > 1 && self.body[0] >> 4 == 10 && self.body[1] == 0,
            _ => false,
        }
    }
}

/// A video body that carries NAL units (not a sequence header).
pub fn is_video_frame(body: &[u8]) -> bool {
    body.len() > 5 && body[1] == 1
}

/// A video body that starts a GOP: what a player can begin decoding at.
pub fn is_keyframe(body: &[u8]) -> bool {
    is_video_frame(body) && body[0] >> 4 == 1
}

/// The clip: 10 s of 640x360 30 fps H264 at a constant 936 kbit/s (x264's
/// CBR pads with filler NAL units, so the rate holds whatever the picture),
/// IDR every 2 s, no B-frames, and 64 kbit/s AAC at 48 kHz: 1 Mbit/s in all.
/// Made by ffmpeg once per target directory.
pub fn clip(dir: &Path) -> Result<PathBuf, String> {
    let path = dir.join("clip-1mbit-h264-aac.flv");
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = dir.join(format!("clip.{}.tmp.flv", std::process::id()));
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", "10", "-c:v", "libx264", "-profile:v", "baseline"])
        .args([
            "-pix_fmt",
            "yuv420p",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
        ])
        .args([
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-sc_threshold",
            "0",
            "-bf",
            "0",
        ])
        .args([
            "-b:v", "936k", "-minrate", "936k", "-maxrate", "936k", "-bufsize", "468k",
        ])
        .args(["-x264-params", "nal-hrd=cbr:force-cfr=1"])
        .args(["-c:a", "aac", "-b:a", "64k", "-ac", "1", "-f", "flv"])
        .arg(&tmp)
        .status()
        .map_err(|e| format!("ffmpeg (needed to make the RTMP clip): {e}"))?;
    if !status.success() {
        return Err(format!("ffmpeg failed to make the RTMP clip: {status}"));
    }
    std::fs::rename(&tmp, &path).map_err(|e| e.to_string())?;
    Ok(path)
}

/// The audio and video tags of an FLV file, in file order.
pub fn read_tags(path: &Path) -> Result<Vec<Tag>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = TagReader::default();
    let mut tags = Vec::new();
    reader
        .input(&data, &mut |kind, ms, body| {
            if matches!(kind, AUDIO | VIDEO) {
                tags.push(Tag {
                    kind,
                    ms,
                    body: body.to_vec(),
                });
            }
        })
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if reader.mid_unit() {
        return Err(format!("{}: truncated tag", path.display()));
    }
    if !tags.iter().any(|t| t.kind == VIDEO && is_keyframe(&t.body)) {
        return Err(format!("{}: no H264 keyframe", path.display()));
    }
    Ok(tags)
}

/// Largest FLV tag body accepted (the gateway refuses publishers' messages
/// over 4 MiB by default).
pub const MAX_TAG: usize = 8 << 20;
/// The buffer for a cut tag is kept for the next one up to this capacity.
const KEEP: usize = 64 * 1024;

/// FLV as a stream (a file, or an HTTP-FLV body), where it is now: bytes
/// come as they are read, a tag may span reads, and whole tags in a read
/// are handed out in place; only a tag cut by the end of a read is
/// gathered, in a buffer of one tag at most ([`MAX_TAG`]), let go when it
/// grew large.
#[derive(Default)]
pub struct TagReader {
    /// The file header and PreviousTagSize0 have been read.
    started: bool,
    /// A header or tag cut by the end of a read or chunk, being gathered.
    pending: Vec<u8>,
}

impl TagReader {
    /// A header or tag has begun and not ended (at the end of a file: it
    /// was cut short).
    pub fn mid_unit(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Bytes needed to tell how long the next unit is.
    fn head_len(&self) -> usize {
        if self.started {
            11
        } else {
            9
        }
    }

    /// The length of the unit that starts `b` (the file header with
    /// PreviousTagSize0, or a tag with its PreviousTagSize), once `b` holds
    /// enough to tell.
    fn unit(&self, b: &[u8]) -> Result<Option<usize>, String> {
        if b.len() < self.head_len() {
            return Ok(None);
        }
        if !self.started {
            if &b[..3] != b"FLV" {
                return Err(format!("not FLV: it starts {:02x?}", &b[..9]));
            }
            let offset = u32::from_be_bytes([b[5], b[6], b[7], b[8]]) as usize;
            if !(9..=1024).contains(&offset) {
                return Err(format!("an FLV header of {offset} bytes"));
            }
            return Ok(Some(offset + 4));
        }
        let size = u32::from_be_bytes([0, b[1], b[2], b[3]]) as usize;
        if size > MAX_TAG {
            return Err(format!("an FLV tag of {size} bytes (over {MAX_TAG})"));
        }
        Ok(Some(11 + size + 4))
    }

    /// One whole unit.
    fn take(&mut self, unit: &[u8], tag: &mut dyn FnMut(u8, u32, &[u8])) -> Result<(), String> {
        if !self.started {
            self.started = true;
            return Ok(());
        }
        let size = unit.len() - 15;
        let at = unit.len() - 4;
        let prev = u32::from_be_bytes([unit[at], unit[at + 1], unit[at + 2], unit[at + 3]]);
        if prev as usize != 11 + size {
            return Err(format!(
                "FLV framing lost: a tag of {size} bytes followed by PreviousTagSize {prev}"
            ));
        }
        // The low 5 bits are the type; bit 5 marks an encrypted tag. The
        // time: 24 bits, then its upper 8.
        let ms = u32::from_be_bytes([unit[7], unit[4], unit[5], unit[6]]);
        tag(unit[0] & 0x1f, ms, &unit[11..11 + size]);
        Ok(())
    }

    /// Reads FLV bytes: `tag(type, ms, body)` for each tag as it completes.
    pub fn input(
        &mut self,
        mut data: &[u8],
        tag: &mut dyn FnMut(u8, u32, &[u8]),
    ) -> Result<(), String> {
        while !data.is_empty() {
            if self.pending.is_empty() {
                // Whole units straight from the read, not copied.
                if let Some(n) = self.unit(data)?.filter(|&n| n <= data.len()) {
                    self.take(&data[..n], tag)?;
                    data = &data[n..];
                    continue;
                }
            }
            let want = self.unit(&self.pending)?.unwrap_or(self.head_len());
            let n = (want - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.unit(&self.pending)? == Some(self.pending.len()) {
                let mut unit = std::mem::take(&mut self.pending);
                self.take(&unit, tag)?;
                if unit.capacity() <= KEEP {
                    unit.clear();
                    self.pending = unit;
                }
            }
        }
        Ok(())
    }
}

/// Identifies the load tool's SEI (user_data_unregistered) among others.
const STAMP_UUID: [u8; 16] = *b"mgw-loadgen-time";
/// 64 bits in 7-bit groups, high bit set: no zero byte, so no emulation
/// prevention is needed and the NAL unit stays valid H264.
const STAMP_DIGITS: usize = 10;
/// SEI header (type 6, payload 5, size) + UUID + digits + rbsp stop bit.
const STAMP_NAL: usize = 3 + 16 + STAMP_DIGITS + 1;

/// Appends an SEI NAL unit (AVCC, 4-byte length) carrying `ns` to a video
/// frame body.
pub fn stamp(body: &mut Vec<u8>, ns: u64) {
    body.extend_from_slice(&(STAMP_NAL as u32).to_be_bytes());
    body.extend_from_slice(&[6, 5, (16 + STAMP_DIGITS) as u8]);
    body.extend_from_slice(&STAMP_UUID);
    for i in 0..STAMP_DIGITS {
        body.push(0x80 | ((ns >> (7 * i)) & 0x7f) as u8);
    }
    body.push(0x80);
}

/// The send time [`stamp`] put at the end of a video frame body, if any.
pub fn stamped(body: &[u8]) -> Option<u64> {
    let tail = body.get(body.len().checked_sub(STAMP_NAL)?..)?;
    if tail[..3] != [6, 5, (16 + STAMP_DIGITS) as u8] || tail[3..19] != STAMP_UUID {
        return None;
    }
    let digits = &tail[19..19 + STAMP_DIGITS];
    Some(
        digits
            .iter()
            .enumerate()
            .fold(0u64, |ns, (i, d)| ns | (u64::from(d & 0x7f) << (7 * i))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_and_has_no_zero_byte() {
        for ns in [0, 1, 0x80, 123_456_789_012, u64::MAX] {
            let mut body = vec![0x27, 1, 0, 0, 0, 0, 0, 0, 4, 0x41, 0x9a];
            stamp(&mut body, ns);
            assert_eq!(stamped(&body), Some(ns));
            let nal = &body[body.len() - STAMP_NAL..];
            assert!(!nal.contains(&0), "{nal:?}");
            let len = u32::from_be_bytes(body[11..15].try_into().unwrap()) as usize;
            assert_eq!(len, STAMP_NAL);
        }
    }

    #[test]
    fn an_unstamped_frame_has_no_time() {
        assert_eq!(stamped(&[0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41]), None);
        assert_eq!(stamped(&[]), None);
    }
}
