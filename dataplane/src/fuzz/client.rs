//! What clients send, as bytes, for the tests and the harnesses'
//! structured inputs: RTMP commands after the handshake, FLV video
//! messages, noise, and the framing of a harness's inputs.

use rml_amf0::Amf0Value;

use crate::rtmp::chunk::write_message;
use crate::rtmp::conn::types;

/// The test picture's SPS (Constrained Baseline, level 3.1).
pub(crate) const SPS: [u8; 9] = [0x67, 0x42, 0x00, 0x1f, 0xe9, 0x02, 0xc1, 0x2c, 0x80];

/// An FLV IDR frame of one slice.
pub(crate) const FLV_KEYFRAME: [u8; 12] = [0x17, 1, 0, 0, 0, 0, 0, 0, 3, 0x65, 0x88, 0x84];

/// An AMF0 command `name` (transaction `txn`) on chunk stream 3.
pub(crate) fn amf(name: &str, txn: f64, args: Vec<Amf0Value>) -> Vec<u8> {
    let mut v = vec![Amf0Value::Utf8String(name.into()), Amf0Value::Number(txn)];
    v.extend(args);
    let mut w = Vec::new();
    let body = rml_amf0::serialize(&v).unwrap();
    write_message(&mut w, 3, 0, types::COMMAND_AMF0, 1, &body, 128);
    w
}

/// `connect` to `live`, then `cmd` (publish or play) of `key`, as a
/// client sends them after the handshake.
pub(crate) fn rtmp_command(cmd: &str, key: &str) -> Vec<u8> {
    let app = Amf0Value::Object([("app".to_string(), Amf0Value::Utf8String("live".into()))].into());
    let mut bytes = amf("connect", 1.0, vec![app]);
    bytes.extend(amf(
        cmd,
        0.0,
        vec![Amf0Value::Null, Amf0Value::Utf8String(key.into())],
    ));
    bytes
}

/// An FLV AVC sequence header with [`SPS`] and a PPS.
pub(crate) fn flv_avc_config() -> Vec<u8> {
    let mut config = vec![0x17, 0, 0, 0, 0, 1, 0x42, 0x00, 0x1f, 0xff, 0xe1, 0, 9];
    config.extend_from_slice(&SPS);
    config.extend_from_slice(&[1, 0, 4, 0x68, 0xce, 0x3c, 0x80]);
    config
}

/// An RTMP video message (FLV body `body`) on chunk stream 6, as a
/// publisher sends it.
pub(crate) fn flv_video(body: &[u8]) -> Vec<u8> {
    flv_video_at(0, body)
}

/// [`flv_video`] at `ms` on the stream's clock.
pub(crate) fn flv_video_at(ms: u32, body: &[u8]) -> Vec<u8> {
    let mut flv = Vec::new();
    write_message(&mut flv, 6, ms, types::VIDEO, 1, body, 128);
    flv
}

/// `n` bytes of noise (xorshift from `seed`): what a hostile client sends.
pub(crate) fn junk(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Appends one input of a harness to `input`: `[op][len: u16 big-endian][body]`.
pub(crate) fn framed(input: &mut Vec<u8>, op: u8, body: &[u8]) {
    input.push(op);
    input.extend_from_slice(&(body.len() as u16).to_be_bytes());
    input.extend_from_slice(body);
}
