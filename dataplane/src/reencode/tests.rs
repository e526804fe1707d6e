//! The re-encoder against real encoders' streams (the ffmpeg tool's).

use super::*;

fn source_with_bframes(n: u32, size: &str) -> Vec<(u32, Vec<u8>)> {
    x264_bframes_flv(&format!("testsrc2=size={size}:rate=30"), n, 30)
}

/// Picture types of FLV video tag bodies, decoded in order.
fn decoded_kinds(tags: &[(u32, Vec<u8>)]) -> Vec<picture::Type> {
    let mut dec = codec::context::Context::new_with_codec(decoder::find(codec::Id::H264).unwrap())
        .decoder()
        .video()
        .unwrap();
    let (mut sps, mut pps) = (Vec::new(), Vec::new());
    let mut picture = frame::Video::empty();
    let mut kinds = Vec::new();
    for (ms, body) in tags {
        if body[1] == 0 {
            let (s, p) = parameter_sets(&body[5..]).unwrap();
            (sps, pps) = (s.to_vec(), p.to_vec());
            continue;
        }
        if body[1] != 1 {
            continue; // end of sequence
        }
        let mut au = Vec::new();
        let sets = [&sps, &pps];
        let head = if body[0] >> 4 == 1 { &sets[..] } else { &[] };
        for nal in head
            .iter()
            .map(|s| s.as_slice())
            .chain(avcc_nals(&body[5..]))
        {
            au.extend_from_slice(&START);
            au.extend_from_slice(nal);
        }
        let mut packet = Packet::copy(&au);
        packet.set_dts(Some(*ms as i64));
        dec.send_packet(&packet).unwrap();
        while dec.receive_frame(&mut picture).is_ok() {
            kinds.push(picture.kind());
        }
    }
    kinds
}

/// x264 with B-frames in, every picture out at once in presentation
/// order, with no B-frames and no composition offsets: the sequence
/// header first, a keyframe where the source has one, presentation
/// times rising 33-34 ms apart.
#[test]
fn b_frames_in_every_picture_out_in_order_without_them() {
    let source = source_with_bframes(60, "160x96");
    let kinds = decoded_kinds(&source);
    assert!(
        kinds.contains(&picture::Type::B),
        "the source has B-frames: {kinds:?}"
    );
    let mut r = Reencoder::new(Input::FlvH264).unwrap();
    let mut out = Vec::new();
    for (ms, body) in &source {
        r.push(*ms, body, &mut out);
    }
    assert!(r.refused.is_none(), "{:?}", r.refused);
    assert_eq!(out[0].1[..2], [0x17, 0], "a sequence header first");
    let frames: Vec<&(u32, Vec<u8>)> = out.iter().filter(|(_, b)| b[1] == 1).collect();
    // The decoder holds back the pictures that reordering needs (2).
    assert!(frames.len() >= 58, "{} of 60 pictures", frames.len());
    assert_eq!(frames[0].1[0], 0x17, "a keyframe first");
    let keys = frames.iter().filter(|(_, b)| b[0] == 0x17).count();
    assert_eq!(keys, 2, "the source's two IDRs (gop 30)");
    assert!(frames.iter().all(|(_, b)| b[2..5] == [0, 0, 0]));
    for w in frames.windows(2) {
        let d = w[1].0 as i64 - w[0].0 as i64;
        assert!((33..=34).contains(&d), "{} then {}", w[0].0, w[1].0);
    }
    let kinds = decoded_kinds(&out);
    assert_eq!(kinds.len(), frames.len());
    assert!(!kinds.contains(&picture::Type::B), "{kinds:?}");
}

/// A sequence header that declares a picture over 1080p: refused at
/// once, said why, and its frames never decoded.
#[test]
fn a_picture_over_1080p_is_refused_before_decoding() {
    let tags = source_with_bframes(2, "2560x1440");
    let mut r = Reencoder::new(Input::FlvH264).unwrap();
    let mut out = Vec::new();
    for (ms, body) in &tags {
        r.push(*ms, body, &mut out);
    }
    let why = r.refused.take().expect("refused");
    assert!(why.contains("2560x1440") && why.contains("1080p"), "{why}");
    assert!(out.is_empty());
}

/// RTP packets of `frames` pictures of a 320x240 test pattern, encoded
/// by the ffmpeg tool with `encoder` (its arguments) and packetized by
/// its RTP muxer (RFC 7741 for VP8, RFC 9628 for VP9): a real sender's
/// packets, caught on a local socket.
fn ffmpeg_rtp(encoder: &[&str], frames: u32) -> Vec<Vec<u8>> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    // Room for the whole stream (a few hundred packets), so a reader
    // held back on a busy machine loses none.
    let size: libc::c_int = 4 << 20;
    // SAFETY: setsockopt on a socket we own with a correctly sized int.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let mut ffmpeg = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi"])
        .args(["-i", "testsrc2=size=320x240:rate=30"])
        .args(["-frames:v", &frames.to_string()])
        .args(encoder)
        .args(["-strict", "experimental", "-f", "rtp"])
        .arg(format!("rtp://127.0.0.1:{port}?pkt_size=1200"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the ffmpeg tool");
    // Read while it sends (it sends as fast as it encodes, more than a
    // socket buffer holds), until it has exited and nothing is left.
    sock.set_read_timeout(Some(std::time::Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let mut packets = Vec::new();
    let mut exited = None;
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => packets.push(buf[..n].to_vec()),
            Err(_) if exited.is_some() => break,
            Err(_) => exited = ffmpeg.try_wait().unwrap(),
        }
    }
    assert!(exited.unwrap().success());
    for w in packets.windows(2) {
        let seq = |p: &[u8]| u16::from_be_bytes([p[2], p[3]]);
        assert_eq!(
            seq(&w[1]),
            seq(&w[0]).wrapping_add(1),
            "every packet caught"
        );
    }
    packets
}

/// A whole frame: keyframe, RTP time, bytes.
type Frame = (bool, u32, Vec<u8>);

/// Whole frames of RTP `packets` through the codec's depacketizer, and
/// what else it said.
fn depacketized(codec: VideoCodec, packets: &[Vec<u8>]) -> (Vec<Frame>, Vec<Out>) {
    let mut d = codec.depacketizer();
    let (mut frames, mut other, mut out) = (Vec::new(), Vec::new(), Vec::new());
    for p in packets {
        let h = crate::rtp::RtpHeader::parse(p).unwrap();
        d.push(h.seq_no, h.timestamp, h.marker, &p[h.len..], &mut out);
        for o in out.drain(..) {
            match o {
                Out::Coded { key, rtp_ts, frame } => frames.push((key, rtp_ts, frame)),
                o => other.push(o),
            }
        }
    }
    (frames, other)
}

/// Coded frames through a transcoder for `codec`, numbered in order.
fn transcoded(codec: VideoCodec, frames: &[Frame]) -> Vec<(u32, Vec<u8>)> {
    let mut r = Reencoder::new(Input::Coded(codec)).unwrap();
    let mut out = Vec::new();
    for (n, (key, rtp_ts, frame)) in frames.iter().enumerate() {
        r.push_coded(n as u32, rtp_ts / 90, *key, frame, &mut out);
    }
    assert!(r.refused.is_none(), "{:?}", r.refused);
    out
}

use crate::codec::Out;

/// ffmpeg's VP8 and VP9 over RTP, joined into frames and transcoded:
/// H264 that decodes to every picture, a sequence header first, an IDR
/// where the source has a keyframe, no B-frames.
#[test]
fn vp8_and_vp9_from_a_real_packetizer_become_h264() {
    for (codec, encoder) in [
        (
            VideoCodec::Vp8,
            ["-c:v", "libvpx", "-deadline", "realtime", "-g", "30"],
        ),
        (
            VideoCodec::Vp9,
            ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-g", "30"],
        ),
    ] {
        let packets = ffmpeg_rtp(&encoder, 60);
        let (frames, other) = depacketized(codec, &packets);
        assert!(other.is_empty(), "{codec:?}: {other:?}");
        assert_eq!(frames.len(), 60, "{codec:?}: every frame joined");
        let keys: Vec<usize> = (0..60).filter(|&i| frames[i].0).collect();
        assert_eq!(keys, [0, 30], "{codec:?}: the source's keyframes");
        let tags = transcoded(codec, &frames);
        assert_eq!(
            tags[0].1[..2],
            [0x17, 0],
            "{codec:?}: a sequence header first"
        );
        let pictures: Vec<&(u32, Vec<u8>)> = tags.iter().filter(|(_, b)| b[1] == 1).collect();
        assert_eq!(pictures.len(), 60, "{codec:?}: a picture for each frame");
        let idr: Vec<usize> = (0..60).filter(|&i| pictures[i].1[0] == 0x17).collect();
        assert_eq!(
            idr,
            [0, 30],
            "{codec:?}: IDRs where the source has keyframes"
        );
        let kinds = decoded_kinds(&tags);
        assert_eq!(kinds.len(), 60, "{codec:?}: all decode");
        assert!(!kinds.contains(&picture::Type::B));
        // Times follow the source's RTP times (33-34 ms apart at 30 fps).
        for w in pictures.windows(2) {
            assert!((33..=34).contains(&(w[1].0 - w[0].0)), "{codec:?}");
        }
    }
}

/// A source whose keyframes are 10 s apart still gives RTMP players an
/// IDR at least every TRANSCODE_GOP frames (2 s at 30 fps).
#[test]
fn a_transcoded_stream_has_an_idr_at_least_every_two_seconds() {
    let packets = ffmpeg_rtp(
        &["-c:v", "libvpx", "-deadline", "realtime", "-g", "300"],
        130,
    );
    let (frames, _) = depacketized(VideoCodec::Vp8, &packets);
    assert_eq!(
        frames.iter().filter(|f| f.0).count(),
        1,
        "one source keyframe"
    );
    let tags = transcoded(VideoCodec::Vp8, &frames);
    let pictures: Vec<&(u32, Vec<u8>)> = tags.iter().filter(|(_, b)| b[1] == 1).collect();
    let idr: Vec<usize> = (0..pictures.len())
        .filter(|&i| pictures[i].1[0] == 0x17)
        .collect();
    assert_eq!(
        idr,
        [0, 60, 120],
        "of {} pictures from {} frames",
        pictures.len(),
        frames.len()
    );
}

/// A packet lost in the middle: the frame it hit and those after it
/// are dropped until the next keyframe, which is asked for; a frame
/// lost on the way to the transcoder does the same there.
#[test]
fn after_a_loss_nothing_until_the_next_keyframe() {
    let mut packets = ffmpeg_rtp(&["-c:v", "libvpx", "-deadline", "realtime", "-g", "30"], 60);
    let lost = packets.len() / 4; // in the first GOP, not its keyframe
    packets.remove(lost);
    let (frames, other) = depacketized(VideoCodec::Vp8, &packets);
    assert_eq!(other[0], Out::NeedKeyframe);
    // The frames before the loss, then the second GOP whole, from its keyframe.
    let second = frames.len() - 30;
    assert!(second < 30, "{} frames", frames.len());
    assert!(
        frames[second].0,
        "the frames after the loss start at a keyframe"
    );
    assert_eq!(frames.iter().filter(|f| f.0).count(), 2);
    // The transcoder is given every frame but one (after the first keyframe).
    let whole = depacketized(
        VideoCodec::Vp8,
        &ffmpeg_rtp(&["-c:v", "libvpx", "-deadline", "realtime", "-g", "30"], 60),
    )
    .0;
    let mut r = Reencoder::new(Input::Coded(VideoCodec::Vp8)).unwrap();
    let mut out = Vec::new();
    for (n, (key, ts, frame)) in whole.iter().enumerate() {
        if n == 5 {
            continue; // full queue
        }
        r.push_coded(n as u32, ts / 90, *key, frame, &mut out);
        if (6..30).contains(&n) {
            assert!(std::mem::take(&mut r.wants_keyframe), "frame {n} asks");
        }
    }
    let pictures = out.iter().filter(|(_, b)| b[1] == 1).count();
    assert_eq!(pictures, 5 + 30, "frames 0-4, then from the keyframe at 30");
}

/// Bad input on every transcode path (the coded frames a WebRTC
/// publisher's depacketizer hands on, an E-RTMP push's tags): random
/// bytes, a real keyframe cut short, a delta after it, each flagged as
/// a keyframe; never a panic, never a picture of random bytes, and the
/// VP8 one still transcodes the real stream after it.
#[test]
fn junk_on_every_transcode_path_is_dropped() {
    let mut seed = 0x2545_f491_u32;
    let mut junk = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect()
    };
    let real = depacketized(
        VideoCodec::Vp8,
        &ffmpeg_rtp(&["-c:v", "libvpx", "-deadline", "realtime", "-g", "30"], 30),
    )
    .0;
    let cut = real[0].2[..real[0].2.len() / 3].to_vec();
    let bad: Vec<Vec<u8>> = vec![junk(1), junk(40), junk(3000), cut, real[5].2.clone()];
    let mut out = Vec::new();
    for codec in [VideoCodec::Vp8, VideoCodec::Vp9, VideoCodec::Av1] {
        let mut r = Reencoder::new(Input::Coded(codec)).unwrap();
        for (n, frame) in bad.iter().enumerate() {
            r.push_coded(n as u32, n as u32 * 33, true, frame, &mut out);
            let pictures = out.iter().filter(|(_, b)| b.get(1) == Some(&1)).count();
            // Random bytes make no picture; a cut keyframe (and the
            // delta on it) may, concealed by the decoder.
            assert!(n >= 3 || pictures == 0, "{codec:?}: a picture of junk {n}");
        }
        out.clear();
        if codec == VideoCodec::Vp8 {
            let n0 = bad.len() as u32;
            for (n, (key, ts, frame)) in real.iter().enumerate() {
                r.push_coded(n0 + n as u32, ts / 90, *key, frame, &mut out);
            }
            let pictures = out.iter().filter(|(_, b)| b.get(1) == Some(&1)).count();
            assert!(pictures >= 25, "VP8 after junk: {pictures} pictures");
            out.clear();
        }
    }
    for fourcc in [&b"hvc1"[..], b"av01", b"vp09"] {
        let mut r = Reencoder::new(Input::of_flv(&[&[0x90][..], fourcc].concat())).unwrap();
        for (i, body) in bad.iter().enumerate() {
            // A sequence start of junk, then coded frames of junk.
            let head = if i == 0 { 0x90 } else { 0x91 };
            let tag = [&[head][..], fourcc, &[0, 0, 0], body].concat();
            r.push(i as u32 * 33, &tag, &mut out);
            r.push(i as u32 * 33, &tag[..tag.len().min(7)], &mut out);
        }
        let pictures = out.iter().filter(|(_, b)| b.get(1) == Some(&1)).count();
        assert_eq!(pictures, 0, "{}", String::from_utf8_lossy(fourcc));
        out.clear();
    }
}

/// A VP8 keyframe that declares a picture over 1080p is refused
/// before it is decoded, and said why.
#[test]
fn a_vp8_picture_over_1080p_is_refused_before_decoding() {
    let mut key = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
    key.extend_from_slice(&3840u16.to_le_bytes());
    key.extend_from_slice(&2160u16.to_le_bytes());
    key.resize(64, 0);
    assert_eq!(crate::codec::vp8::keyframe_size(&key), Some((3840, 2160)));
    let mut r = Reencoder::new(Input::Coded(VideoCodec::Vp8)).unwrap();
    let mut out = Vec::new();
    r.push_coded(0, 0, true, &key, &mut out);
    let why = r.refused.take().expect("refused");
    assert!(why.contains("3840x2160") && why.contains("VP8"), "{why}");
    assert!(out.is_empty());
}
