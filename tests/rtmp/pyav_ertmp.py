#!/usr/bin/env python3
"""Enhanced RTMP (E-RTMP, 2023) clients: FFmpeg 8 through PyAV (the wheel in
.venv bundles FFmpeg 8.1 with libsvtav1, libx265 and libvpx-vp9; Debian's
ffmpeg 5.1 speaks only legacy FLV).

  pyav_ertmp.py push URL CODEC SECONDS   # av1 | hevc | vp9, 320x240 at 30 fps, a keyframe a second, real time
  pyav_ertmp.py play URL SECONDS         # one JSON line: what the player got

FFmpeg's FLV muxer writes HEVC, AV1 and VP9 with the E-RTMP ExVideoTagHeader
(FourCC hvc1, av01, vp09) and its FLV reader reads it back.
"""
import json
import sys
import time
from fractions import Fraction

import av

ENCODERS = {
    "av1": ("libsvtav1", {"preset": "12"}),
    "hevc": ("libx265", {"preset": "ultrafast", "tune": "zerolatency"}),
    "vp9": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8"}),
}


def push(url, codec, seconds):
    name, options = ENCODERS[codec]
    out = av.open(url, mode="w", format="flv")
    stream = out.add_stream(name, rate=30, options=options)
    stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
    stream.codec_context.gop_size = 30
    stream.codec_context.time_base = Fraction(1, 30)
    src = av.open("testsrc2=size=320x240:rate=30", format="lavfi")
    t0 = time.monotonic()
    n = 0
    for frame in src.decode(video=0):
        if n >= seconds * 30:
            break
        frame = frame.reformat(format="yuv420p")
        frame.pts, frame.time_base = n, Fraction(1, 30)
        for packet in stream.encode(frame):
            out.mux(packet)
        n += 1
        # Real time, as a camera: the next frame when it is due.
        due = t0 + n / 30 - time.monotonic()
        if due > 0:
            time.sleep(due)
    for packet in stream.encode(None):
        out.mux(packet)
    out.close()


def play(url, seconds):
    t0 = time.monotonic()
    report = {"frames": 0, "keyframes": 0}
    # A short probe: a late player's first packets are the cached GOP.
    options = {"rw_timeout": "10000000", "analyzeduration": "500000"}
    c = av.open(url, options=options, timeout=10)
    video = c.streams.video[0]
    codec = video.codec_context.codec
    report["codec"] = getattr(codec, "canonical_name", codec.name)
    report["open_ms"] = round((time.monotonic() - t0) * 1000)
    t0 = time.monotonic()  # `seconds` of playing, from here
    first = True
    for packet in c.demux(video):
        if packet.size == 0:
            continue
        if first:
            report["first_packet_key"] = bool(packet.is_keyframe)
            first = False
        report["keyframes"] += bool(packet.is_keyframe)
        try:
            for frame in packet.decode():
                if report["frames"] == 0:
                    report["first_frame_ms"] = report["open_ms"] + round((time.monotonic() - t0) * 1000)
                    report["size"] = [frame.width, frame.height]
                report["frames"] += 1
        except av.error.FFmpegError as e:
            report.setdefault("errors", []).append(str(e))
        if time.monotonic() - t0 > seconds:
            break
    c.close()
    print(json.dumps(report))


if __name__ == "__main__":
    if sys.argv[1] == "push":
        push(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    else:
        play(sys.argv[2], float(sys.argv[3]))
