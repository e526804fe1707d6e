#!/usr/bin/env python3
"""WHIP publisher built on FFmpeg 8's own WHIP muxer (`-f whip`), through
PyAV, for the end-to-end tests.

    ffmpeg_whip.py URL --seconds 8 [--token T] [--dtls-active]

Encodes a synthetic picture (640x360, 30 fps, a moving gradient) with
libx264 and a 440 Hz tone with libopus, both from the PyAV wheel, and
publishes them in real time for --seconds once connected. Prints one JSON
line when the muxer has connected (or failed to) and one at the end (the
Rust test asserts on them):

    {"event": "connected", "ok": true, "connect_ms": ..., "answer_setup": ["active", ...], ...}
    {"ok": true, "video_packets": N, "audio_packets": N, "deleted": true, "timings_ms": {...}, ...}

A failure is `"ok": false` with `error`, and `http_status` when the WHIP
POST was refused (401 without a token when the gateway wants one).

What FFmpeg's WHIP muxer is, as bundled in PyAV 18.1.0 (FFmpeg 8.1,
libavformat 62.12, TLS by GnuTLS 3.8), learned against this gateway:

- Options (muxer private options, `av.open(..., options=...)`):
  `authorization` (the Bearer token for the POST and the DELETE),
  `cert_file` / `key_file` (PEM; otherwise a fresh self-signed one),
  `handshake_timeout` (ms for ICE + DTLS, default 5000), `pkt_size`
  (default 1200; RTP payload is pkt_size - 16 for the SRTP tag),
  `ts_buffer_size`, `rtp_history` (packets kept for NACKs),
  `whip_flags` (`dtls_active`: offer `a=setup:active` instead of the
  default `a=setup:passive`). The format is flagged experimental; it
  opens without `strict`.
- Codecs: H264 (annexb, no B-frames: `video_delay > 0` is refused; the
  profile and level come from the SPS in the extradata, so the encoder
  needs global headers, which PyAV sets for this format) and Opus
  48 kHz stereo only. PT 106 for H264 (packetization-mode=1), 111 Opus.
- The offer has `a=setup:passive` on every m-line (unless `dtls_active`),
  BUNDLE, rtcp-mux, one sha-256 fingerprint, ICE credentials; it uses
  only the answer's first `udp ... typ host` candidate, ufrag and pwd.
  ICE: it is the controlling agent of an ICE-lite server: its binding
  request carries USERNAME, USE-CANDIDATE, PRIORITY, ICE-CONTROLLING,
  MESSAGE-INTEGRITY and FINGERPRINT; it repeats it until the first
  response, then sends one every 5 s while publishing ("Consent Freshness
  check sent"), which keeps the gateway's 30 s consent timer happy. It
  sends RTCP sender reports every ~5 s per stream, and offers RTX (PT 105,
  `a=ssrc-group:FID`) with `a=rtcp-fb:106 nack` only: it cannot answer a
  PLI (no encoder to ask), so a player waits for its next IDR. The
  gateway's answer names `nack` alone back (an answer adds no feedback
  type the offer lacks).
- DTLS, FFmpeg as server (GnuTLS): it sets up its DTLS server only once
  the binding response is in, and the ClientHello the gateway sends right
  after that response goes unanswered (seen on the wire; its ICE loop
  reads that datagram itself, and the DTLS layer then waits on the socket
  for another). It answers the gateway's first retransmission, which the
  gateway sends after 300 ms as a DTLS client (dimpl's default, 1 s, made
  ICE + DTLS take ~1 s): ~0.3 s in all.
  GnuTLS picks ECDHE-ECDSA-AES128-GCM-SHA256, x25519 and
  SRTP_AES128_CM_HMAC_SHA1_80 from the gateway's ClientHello (FFmpeg's
  SRTP knows no GCM profile).
- `whip_flags=dtls_active` (`--dtls-active` here) makes FFmpeg the DTLS
  client and the gateway the server: no lost ClientHello, ICE + DTLS in
  ~0.3 s. A server that fails the handshake and closes the port without
  an alert leaves GnuTLS retransmitting for ~63 s (1+2+4+...+32 s) before
  the muxer gives up: `handshake_timeout` does not bound it.
- Its own certificate (GnuTLS build) is ECDSA on **P-224** (secp224r1:
  `gnutls_sec_param_to_pk_bits(ECDSA, MEDIUM)` = 224 bits), signed with
  SHA-256. dimpl's verifier knows P-256 and P-384 only; the gateway checks
  P-224 itself (dataplane/src/dtls_verify.rs), so FFmpeg's own certificate
  works in both roles. FFmpeg builds on OpenSSL generate P-256.
- It DELETEs the resource on close (with the token), logging
  "Dispose resource URL ok"; it resolves the relative Location itself.
  The muxer's header (offer, answer, ICE, DTLS) is written when the
  container starts encoding: `start_encoding()` here, else the first mux.
- PyAV logs: FFmpeg's log is off by default and PyAV's Python bridge cuts
  each message at 1023 bytes (an SDP is longer). This script restores
  FFmpeg's own log callback at --loglevel (verbose shows the offer, the
  answer and the per-step timings) and sends stderr to a file it parses
  for the answer, then copies it to the real stderr.
"""

import argparse
import array
import fractions
import json
import math
import os
import re
import sys
import tempfile
import time

import av

WIDTH, HEIGHT, FPS = 640, 360, 30
RATE, SAMPLES = 48000, 960
TONE_HZ = 440

HTTP_ERRORS = {
    "HTTPBadRequestError": 400,
    "HTTPUnauthorizedError": 401,
    "HTTPForbiddenError": 403,
    "HTTPNotFoundError": 404,
    "HTTPTooManyRequestsError": 429,
}


class Picture:
    """A diagonal gradient that moves 4 pixels a frame (yuv420p)."""

    def __init__(self):
        self.ramp = bytes(i & 0xFF for i in range(WIDTH + 2 * 256))

    def frame(self, index):
        f = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        y = f.planes[0]
        shift = (index * 4) & 0xFF
        line = y.line_size
        rows = [self.ramp[(shift + r) & 0xFF:][:line].ljust(line, b"\0") for r in range(HEIGHT)]
        y.update(b"".join(rows))
        for p in f.planes[1:]:
            p.update(bytes([128]) * (p.line_size * p.height))
        f.pts = index
        f.time_base = fractions.Fraction(1, FPS)
        return f


class Tone:
    """A 440 Hz stereo s16 tone; one second holds a whole number of periods."""

    def __init__(self):
        s = array.array("h")
        for i in range(RATE):
            v = int(8000 * math.sin(2 * math.pi * TONE_HZ * i / RATE))
            s.extend((v, v))
        self.second = s.tobytes()

    def frame(self, index):
        f = av.AudioFrame(format="s16", layout="stereo", samples=SAMPLES)
        start = (index * SAMPLES) % RATE * 4
        f.planes[0].update(self.second[start:start + SAMPLES * 4])
        f.sample_rate = RATE
        f.pts = index * SAMPLES
        f.time_base = fractions.Fraction(1, RATE)
        return f


def parse_log(text):
    """What FFmpeg's verbose log says about the exchange and the handshake."""
    out = {}
    m = re.search(r"answer: (v=0.*?)(?=\n\[|\Z)", text, re.S)
    if m:
        answer = m.group(1)
        out["answer_setup"] = re.findall(r"a=setup:(\w+)", answer)
        out["answer_ice_lite"] = "a=ice-lite" in answer
        out["answer_candidates"] = len(re.findall(r"a=candidate:", answer))
    m = re.search(r"offer: (v=0.*?)(?=\n\[|\Z)", text, re.S)
    if m:
        out["offer_setup"] = re.findall(r"a=setup:(\w+)", m.group(1))
    m = re.search(r"elapsed=([\d.]+)ms\(init:([\d.]+),offer:([\d.]+),answer:([\d.]+),udp:([\d.]+),"
                  r"ice:([\d.]+),dtls:([\d.]+),srtp:([\d.]+)\)", text)
    if m:
        keys = ["total", "init", "offer", "answer", "udp", "ice", "dtls", "srtp"]
        out["timings_ms"] = {k: float(v) for k, v in zip(keys, m.groups())}
    m = re.search(r"suite=(\w+)", text)
    if m:
        out["srtp_suite"] = m.group(1)
    m = re.search(r"HTTP error (\d{3})", text)
    if m:
        out["http_status"] = int(m.group(1))
    if "DTLS session failed" in text:
        out["dtls_failed"] = True
    out["deleted"] = bool(re.search(r"Dispose resource \S+ ok", text))
    return out


class StderrToFile:
    """Points fd 2 (FFmpeg's log) at a file; `read()` returns what came so far."""

    def __init__(self):
        self.saved = os.dup(2)
        self.file = tempfile.TemporaryFile()
        os.dup2(self.file.fileno(), 2)

    def read(self):
        sys.stderr.flush()
        self.file.seek(0)
        return self.file.read().decode("utf8", "replace")

    def restore(self):
        text = self.read()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        sys.stderr.write(text)
        sys.stderr.flush()
        return text


def report(obj):
    print(json.dumps(obj), flush=True)


def publish(args):
    level = {"info": av.logging.INFO, "verbose": av.logging.VERBOSE, "debug": av.logging.DEBUG}
    av.logging.restore_default_callback()
    av.logging.set_libav_level(level[args.loglevel])
    log = StderrToFile()
    options = {"handshake_timeout": str(args.handshake_timeout_ms)}
    if args.token:
        options["authorization"] = args.token
    if args.dtls_active:
        options["whip_flags"] = "dtls_active"
    result = {"ok": False, "video_packets": 0, "audio_packets": 0}
    container = None
    t0 = time.monotonic()
    try:
        container = av.open(args.url, mode="w", format="whip", options=options)
        video = container.add_stream("libx264", rate=FPS, options={
            "profile": "baseline", "preset": "veryfast", "tune": "zerolatency",
            "bf": "0", "g": str(2 * FPS), "keyint_min": str(2 * FPS), "sc_threshold": "0"})
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.bit_rate = 400_000
        audio = container.add_stream("libopus", rate=RATE, layout="stereo")
        audio.bit_rate = 64_000
        # Opens the encoders, then the muxer's header: offer, answer, ICE, DTLS.
        container.start_encoding()
    except av.FFmpegError as e:
        text = log.restore()
        result.update(parse_log(text))
        result["error"] = f"{type(e).__name__}: {e}"
        status = HTTP_ERRORS.get(type(e).__name__)
        if status is not None:
            result["http_status"] = status
        result["connect_ms"] = (time.monotonic() - t0) * 1000
        report({"event": "connected", **result})
        report(result)
        return 1
    connected = parse_log(log.read())
    del connected["deleted"]
    result.update(connected)
    result["connect_ms"] = (time.monotonic() - t0) * 1000
    report({"event": "connected", "ok": True, **{k: v for k, v in result.items() if k != "ok"}})

    picture, tone = Picture(), Tone()
    vi = ai = 0
    start = time.monotonic()
    try:
        while True:
            tv, ta = vi / FPS, ai * SAMPLES / RATE
            if min(tv, ta) >= args.seconds:
                break
            wait = start + min(tv, ta) - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if tv <= ta:
                for packet in video.encode(picture.frame(vi)):
                    container.mux(packet)
                    result["video_packets"] += 1
                vi += 1
            else:
                for packet in audio.encode(tone.frame(ai)):
                    container.mux(packet)
                    result["audio_packets"] += 1
                ai += 1
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)
        result["ok"] = True
    except av.FFmpegError as e:
        result["error"] = f"{type(e).__name__}: {e}"
    result["published_s"] = time.monotonic() - start
    try:
        # Writes the trailer and DELETEs the WHIP resource.
        container.close()
    except av.FFmpegError as e:
        result.setdefault("error", f"close: {type(e).__name__}: {e}")
    text = log.restore()
    result["deleted"] = parse_log(text)["deleted"]
    report(result)
    return 0 if result["ok"] else 1


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url", help="the WHIP URL, e.g. http://127.0.0.1:8080/whip/ROOM?participant=ff")
    p.add_argument("--seconds", type=float, default=5, help="publish this long once connected")
    p.add_argument("--token", help="a room token (the muxer's `authorization` option)")
    p.add_argument("--dtls-active", action="store_true",
                   help="whip_flags=dtls_active: offer a=setup:active (FFmpeg the DTLS client)")
    p.add_argument("--handshake-timeout-ms", type=int, default=5000)
    p.add_argument("--loglevel", choices=["info", "verbose", "debug"], default="verbose")
    args = p.parse_args()
    if "whip" not in av.formats_available:
        report({"event": "connected", "ok": False, "error": "this PyAV has no whip muxer"})
        return 2
    return publish(args)


if __name__ == "__main__":
    sys.exit(main())
