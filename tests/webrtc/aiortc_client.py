#!/usr/bin/env python3
"""WHIP publisher / WHEP player built on aiortc, for the end-to-end tests.

    aiortc_client.py publish URL --file clip.ts --seconds 12
    aiortc_client.py play URL --seconds 5
    aiortc_client.py call BASE ROOM NAME --file clip.ts --lines 3 --seconds 10
    aiortc_client.py publish URL --stamp / play URL --stamps   (glass-to-glass delay)
    aiortc_client.py direct --seconds 10   (the same over a direct peer connection)
    aiortc_client.py flv-stamps RTMP_OR_FLV_URL --seconds 8   (the same through ffmpeg)

Prints one JSON line with what happened (the Rust test asserts on it):
publish: {"state": ..., "connected_ms": ...}
play:    {"video_frames": N, "audio_frames": N, "first_frame_ms": ms, "width": W, ...,
          "tone_energy": {"HZ": e, ...} with --tones}
call:    {"participant": NAME, "tracks": [{"mid", "kind", "msid", "frames", "width", ...}]}

aiortc gathers no loopback candidates by default and asks a public STUN
server: patch the host address list and pass no ICE servers (TESTING.md).
"""

import argparse
import array
import asyncio
import json
import logging
import math
import os
import random
import re
import sys
import time

import aioice.ice
import aiohttp
import av
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.contrib.media import MediaPlayer

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

class DecodeErrors(logging.Handler):
    """Counts the frames aiortc's receiver failed to decode (it logs each)."""

    count = 0

    def emit(self, record):
        if "failed to decode" in record.getMessage():
            DecodeErrors.count += 1


logging.getLogger("aiortc.rtcrtpreceiver").addHandler(DecodeErrors())

# --token: a room token sent as `Authorization: Bearer` on WHIP/WHEP/DELETE.
TOKEN = None


# --stamp / --stamps: glass-to-glass delay. The publisher's camera writes
# each frame's capture time (ms, 40 bits, then an 8-bit sum) as 48 black or
# white 32x32 blocks in the top-left corner; the player reads them back from
# the decoded picture. Both ends run on one machine, on one clock.
STAMP_W, STAMP_H, STAMP_BLOCK, STAMP_COLUMNS, STAMP_NOISE_ROWS = 640, 360, 32, 12, 16


def stamp_bits(ms):
    value = ms & ((1 << 40) - 1)
    check = sum(value.to_bytes(5, "big")) & 0xFF
    word = (value << 8) | check
    return [(word >> (47 - i)) & 1 for i in range(48)]


def read_stamp(frame):
    """The capture time a stamped frame carries, or None if unreadable."""
    if frame.width != STAMP_W or frame.height != STAMP_H:
        return None
    plane = frame.planes[0]
    return stamp_in(bytes(plane), plane.line_size)


def stamp_in(data, line):
    """The stamp in a luma plane of `line` bytes a row, or None."""
    word = 0
    for i in range(48):
        x = (i % STAMP_COLUMNS) * STAMP_BLOCK + STAMP_BLOCK // 2
        y = (i // STAMP_COLUMNS) * STAMP_BLOCK + STAMP_BLOCK // 2
        word = (word << 1) | (data[y * line + x] > 128)
    value, check = word >> 8, word & 0xFF
    return value if sum(value.to_bytes(5, "big")) & 0xFF == check else None


class StampCamera(VideoStreamTrack):
    """30 frames a second, each stamped with its capture time."""

    def __init__(self):
        super().__init__()
        self.gray = bytes([128]) * (STAMP_W * STAMP_H)
        self.chroma = bytes([128]) * (STAMP_W // 2 * STAMP_H // 2)

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        # A band of moving noise below the stamp, so a frame is a few
        # packets (~0.4 Mbit/s), as a camera's are: aiortc's jitter buffer
        # hands out one frame per packet received, so one-packet frames
        # would keep any delay a loss once caused.
        y = bytearray(self.gray)
        band = STAMP_W * STAMP_NOISE_ROWS
        y[STAMP_W * 200:STAMP_W * 200 + band] = os.urandom(band)
        for i, bit in enumerate(stamp_bits(int(time.time() * 1000))):
            x0 = (i % STAMP_COLUMNS) * STAMP_BLOCK
            y0 = (i // STAMP_COLUMNS) * STAMP_BLOCK
            row = bytes([235 if bit else 16]) * STAMP_BLOCK
            for line in range(y0, y0 + STAMP_BLOCK):
                y[line * STAMP_W + x0:line * STAMP_W + x0 + STAMP_BLOCK] = row
        frame = av.VideoFrame(STAMP_W, STAMP_H, "yuv420p")
        frame.planes[0].update(bytes(y))
        frame.planes[1].update(self.chroma)
        frame.planes[2].update(self.chroma)
        frame.pts, frame.time_base = pts, time_base
        return frame


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def delay_stats(delays):
    """Glass to glass over the last 80 % of the frames (after the start-up)."""
    steady = delays[len(delays) // 5:]
    return {"stamped_frames": len(delays),
            "delay_ms": {"p50": percentile(steady, 0.5), "p95": percentile(steady, 0.95),
                         "max": max(steady) if steady else None, "min": min(steady) if steady else None}}


def on_stamped_frame(frame, delays):
    on_stamp(read_stamp(frame), delays)


def on_stamp(stamp, delays):
    if stamp is not None:
        # The stamp keeps 40 bits of the time in ms. A picture broken by
        # loss can pass the check sum (1 in 256) as a wild value: one from
        # the future or over a minute old is not a delay.
        delay = (int(time.time() * 1000) - stamp) % (1 << 40)
        if delay < 60_000:
            delays.append(delay)


def new_pc():
    return RTCPeerConnection(
        RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )


# --codec: the video codec a publisher sends and a player takes first
# (h264 or vp8, aiortc's two). A player of a call also takes H264 after it,
# as a browser's default offer does, so it sees an RTMP push's H264.
CODEC = "h264"


def prefer_codec(transceiver, also_h264=False):
    codecs = RTCRtpSender.getCapabilities("video").codecs
    want = [f"video/{CODEC}"] + (["video/h264"] if also_h264 and CODEC != "h264" else [])
    chosen = [c for w in want for c in codecs if c.mimeType.lower() == w]
    rtx = [c for c in codecs if c.mimeType.lower() == "video/rtx"]
    transceiver.setCodecPreferences(chosen + rtx)


def answered_video_codec(pc):
    """The codec the answer put first on the first video line, e.g. "VP8"."""
    sdp = pc.remoteDescription.sdp if pc.remoteDescription else ""
    m = re.search(r"^m=video \S+ \S+ (\d+)", sdp, re.M)
    if not m:
        return None
    name = re.search(rf"^a=rtpmap:{m.group(1)} ([^/\s]+)", sdp, re.M)
    return name.group(1) if name else None


class LossyRelay(asyncio.DatagramProtocol):
    """A UDP relay on the subscriber leg that drops a seeded share of the
    gateway's RTP packets (netem is not available on these machines)."""

    def __init__(self, loss, seed=7):
        self.loss = loss
        self.rng = random.Random(seed)
        self.client = None
        self.upstream = None
        self.dropped = 0
        self.forwarded = 0

    async def start(self, gateway):
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0)
        )
        relay = self

        class Upstream(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                is_rtp = 128 <= data[0] <= 191 and not 192 <= data[1] <= 223
                if is_rtp and relay.rng.random() < relay.loss:
                    relay.dropped += 1
                    return
                relay.forwarded += 1
                if relay.client:
                    relay.transport.sendto(data, relay.client)

        self.upstream, _ = await loop.create_datagram_endpoint(
            Upstream, remote_addr=gateway
        )
        return self.transport.get_extra_info("sockname")[1]

    def datagram_received(self, data, addr):
        self.client = addr
        self.upstream.sendto(data)


async def exchange(session, url, pc, relay=None, bad_fingerprint=False, headers_out=None):
    """POSTs our offer, applies the answer; returns the session URL. With a
    relay, the answer's candidate is rewritten to go through it. With
    bad_fingerprint, the offer names a certificate we do not hold. The
    response headers go into headers_out, if given."""
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    if bad_fingerprint:
        sdp = re.sub(r"(a=fingerprint:sha-256 )[0-9A-F:]+", r"\g<1>" + ":".join(["00"] * 32), sdp)
    headers = {"Content-Type": "application/sdp"}
    if TOKEN:
        headers["Authorization"] = f"Bearer {TOKEN}"
    async with session.post(url, data=sdp, headers=headers) as r:
        body = await r.text()
        if r.status != 201:
            raise SystemExit(f"POST {url}: {r.status} {body}")
        location = r.headers["Location"]
        if headers_out is not None:
            headers_out.update({k.lower(): v for k, v in r.headers.items()})
    if relay is not None:
        m = re.search(r"a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host", body)
        port = await relay.start((m.group(1), int(m.group(2))))
        body = body.replace(f" {m.group(2)} typ host", f" {port} typ host")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    base = url.split("/wh")[0]
    return base + location


def auth_headers():
    return {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}


async def wait_connected(pc, timeout):
    deadline = time.monotonic() + timeout
    while pc.connectionState != "connected":
        if pc.connectionState == "failed" or time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def publish(args):
    # Pass-through (decode=False) sends the clip's H264 as is (any other
    # --codec encodes), so a keyframe
    # request waits for the clip's next IDR; --encode lets aiortc encode and
    # answer PLI with a fresh keyframe, as a camera would.
    # --lavfi: an ffmpeg filter graph as the camera, encoded by aiortc;
    # --stamp: the time-stamping camera (video only).
    if args.stamp:
        video, audio = StampCamera(), None
    else:
        player = MediaPlayer(args.lavfi, format="lavfi") if args.lavfi else MediaPlayer(args.file, decode=args.encode or CODEC != "h264")
        video, audio = player.video, player.audio
    pc = new_pc()
    t0 = time.monotonic()
    video_sender = None
    if video:
        t = pc.addTransceiver(video, direction="sendonly")
        prefer_codec(t)
        video_sender = t.sender
    if audio:
        pc.addTransceiver(audio, direction="sendonly")
    async with aiohttp.ClientSession() as s:
        resource = await exchange(s, args.url, pc, bad_fingerprint=args.bad_fingerprint)
        ok = await wait_connected(pc, 10)
        connected_ms = (time.monotonic() - t0) * 1000
        print(json.dumps({"event": "connected", "ok": ok, "resource": resource}), flush=True)
        # Each second, the target bit rate aiortc's encoder runs at: it
        # moves only on REMB (aiortc has no sender-side estimate).
        targets = []
        end = time.monotonic() + (args.seconds if ok else 0)
        while time.monotonic() < end:
            await asyncio.sleep(min(1.0, max(0.0, end - time.monotonic())))
            encoder = video_sender and getattr(video_sender, "_RTCRtpSender__encoder", None)
            if encoder is not None and hasattr(encoder, "target_bitrate"):
                targets.append(encoder.target_bitrate)
        state = pc.connectionState
        if not args.no_delete:
            async with s.delete(resource, headers=auth_headers()) as r:
                deleted = r.status
        else:
            deleted = None
    await pc.close()
    print(json.dumps({"state": state, "ok": ok, "connected_ms": connected_ms, "deleted": deleted,
                      "targets": targets}), flush=True)


async def play(args):
    pc = new_pc()
    # One video and one audio line per publisher the player wants to see.
    for _ in range(args.lines):
        prefer_codec(pc.addTransceiver("video", direction="recvonly"))
        pc.addTransceiver("audio", direction="recvonly")
    stats = {"video_frames": 0, "audio_frames": 0, "first_frame_ms": None, "width": 0, "height": 0,
             "video_frames_per_track": [], "video_pts_backwards": 0}
    t0 = time.monotonic()
    tasks = []
    audio = array.array("h")
    last_pts = []
    frame_times = []
    delays = []

    async def consume(track):
        slot = None
        if track.kind == "video":
            slot = len(stats["video_frames_per_track"])
            stats["video_frames_per_track"].append(0)
            last_pts.append(None)
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            if track.kind == "video":
                if stats["first_frame_ms"] is None:
                    stats["first_frame_ms"] = (time.monotonic() - t0) * 1000
                stats["video_frames"] += 1
                stats["video_frames_per_track"][slot] += 1
                frame_times.append(time.monotonic())
                if args.stamps:
                    on_stamped_frame(frame, delays)
                # The decoder's output order: a presentation time that goes
                # back is a frame shown out of order.
                if frame.pts is not None:
                    if last_pts[slot] is not None and ((frame.pts - last_pts[slot]) & 0xFFFFFFFF) >= 0x80000000:
                        stats["video_pts_backwards"] += 1
                    last_pts[slot] = frame.pts
                stats["width"], stats["height"] = frame.width, frame.height
            else:
                stats["audio_frames"] += 1
                if args.tones and frame.format.name == "s16":
                    # Packed s16: keep the left channel, as it arrived.
                    samples = array.array("h", bytes(frame.planes[0]))
                    step = len(frame.layout.channels)
                    audio.extend(samples[::step])
                    stats["audio_rate"] = frame.sample_rate

    @pc.on("track")
    def on_track(track):
        tasks.append(asyncio.ensure_future(consume(track)))

    relay = LossyRelay(args.loss) if args.loss > 0 else None
    async with aiohttp.ClientSession() as s:
        resource = await exchange(s, args.url, pc, relay)
        ok = await wait_connected(pc, 10)
        stats["connected"] = ok
        stats["video_codec"] = answered_video_codec(pc)
        stats["connected_ms"] = (time.monotonic() - t0) * 1000
        if ok and args.pli_at is not None:
            # As a decoder that lost the picture would: a PLI for every
            # video SSRC received, then the frames decoded in the second
            # before it and the second after it.
            await asyncio.sleep(args.pli_at)
            at = time.monotonic()
            for t in pc.getTransceivers():
                if t.kind == "video":
                    for ssrc in list(t.receiver._RTCRtpReceiver__active_ssrc):
                        await t.receiver._send_rtcp_pli(ssrc)
            await asyncio.sleep(max(0.0, args.seconds - args.pli_at))
            stats["frames_before_pli"] = sum(1 for f in frame_times if at - 1 <= f < at)
            stats["frames_after_pli"] = sum(1 for f in frame_times if at <= f < at + 1)
        elif ok:
            await asyncio.sleep(args.seconds)
        # The picture at the end: frames decoded in the last 3 s (0 when
        # it froze earlier, e.g. at a change of publisher).
        end = time.monotonic()
        stats["video_frames_last_3s"] = sum(1 for f in frame_times if f >= end - 3)
        # What reached the receiver, decoded or not.
        report = await pc.getStats()
        stats["video_packets"] = sum(
            getattr(r, "packetsReceived", 0)
            for r in report.values()
            if r.type == "inbound-rtp" and r.kind == "video"
        )
        async with s.delete(resource, headers=auth_headers()) as r:
            stats["deleted"] = r.status
    await pc.close()
    for t in tasks:
        t.cancel()
    stats["decode_errors"] = DecodeErrors.count
    if args.stamps:
        stats.update(delay_stats(delays))
    if relay is not None:
        stats["relay_dropped"] = relay.dropped
        stats["relay_forwarded"] = relay.forwarded
    if args.tones:
        # After the first second: the decoder and the stream have settled.
        rate = stats.get("audio_rate", 48000)
        tail = audio[rate:]
        stats["tone_energy"] = {hz: goertzel(tail, float(hz), rate) for hz in args.tones.split(",")}
    print(json.dumps(stats), flush=True)


async def direct(args):
    """The baseline of glass-to-glass delay: the stamping camera over a
    direct peer connection to a second one in this process, no gateway.
    With --impair SPEC the sender's media goes through tests/impair.py
    (the receiver's candidate is moved to the relay's 127.0.0.2), as the
    publisher's leg does in the gateway's measurement."""
    sender, receiver = new_pc(), new_pc()
    relay = None
    prefer_codec(sender.addTransceiver(StampCamera(), direction="sendonly"))
    delays, tasks = [], []

    async def consume(track):
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            on_stamped_frame(frame, delays)

    @receiver.on("track")
    def on_track(track):
        tasks.append(asyncio.ensure_future(consume(track)))

    await sender.setLocalDescription(await sender.createOffer())
    offer = sender.localDescription
    if args.impair is not None:
        # The receiver learns the sender only from its checks through the
        # relay: told the sender's real candidates, it would open a direct
        # path, so they name an address where nobody listens.
        offer = RTCSessionDescription(sdp=offer.sdp.replace(" 127.0.0.1 ", " 127.0.0.3 "), type="offer")
    await receiver.setRemoteDescription(offer)
    await receiver.setLocalDescription(await receiver.createAnswer())
    answer = receiver.localDescription
    if args.impair is not None:
        port = re.search(r"a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host", answer.sdp).group(1)
        impair = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "impair.py")
        relay = await asyncio.create_subprocess_exec(
            sys.executable, impair, "--listen", "127.0.0.2", "--to", "127.0.0.1",
            "--ports", port, "--up", args.impair, stdout=asyncio.subprocess.PIPE)
        await relay.stdout.readline()  # {"ready": true}
        answer = RTCSessionDescription(
            sdp=answer.sdp.replace(f" 127.0.0.1 {port} typ host", f" 127.0.0.2 {port} typ host"),
            type="answer")
    await sender.setRemoteDescription(answer)
    ok = await wait_connected(receiver, 10)
    if ok:
        await asyncio.sleep(args.seconds)
    await sender.close()
    await receiver.close()
    for t in tasks:
        t.cancel()
    if relay is not None:
        relay.terminate()
        await relay.wait()
    print(json.dumps({"connected": ok, **delay_stats(delays)}), flush=True)


async def flv_stamps(args):
    """Glass to glass across the bridge to RTMP: ffmpeg plays URL (RTMP or
    HTTP-FLV, as a mini-program's player would) and hands over each decoded
    picture as gray pixels; their stamps are read as a WebRTC player's are."""
    ffmpeg = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-loglevel", "error", "-fflags", "nobuffer", "-flags", "low_delay",
        "-probesize", "32", "-analyzeduration", "0",
        "-i", args.url, "-an", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "gray", "-",
        stdout=asyncio.subprocess.PIPE)
    # Wall time, not -t: the stream's own clock starts in the GOP cache.
    delays, pictures, end = [], 0, time.monotonic() + args.seconds
    while time.monotonic() < end:
        try:
            picture = await asyncio.wait_for(
                ffmpeg.stdout.readexactly(STAMP_W * STAMP_H), max(0.1, end - time.monotonic()))
        except (asyncio.IncompleteReadError, asyncio.TimeoutError):
            break
        pictures += 1
        on_stamp(stamp_in(picture, STAMP_W), delays)
    if ffmpeg.returncode is None:
        ffmpeg.kill()
    await ffmpeg.wait()
    print(json.dumps({"pictures": pictures, **delay_stats(delays)}), flush=True)


def goertzel(samples, hz, rate):
    """Energy of `samples` at `hz` per sample (a Goertzel filter)."""
    if not samples:
        return 0.0
    coeff = 2.0 * math.cos(2.0 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x / 32768.0 + coeff * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - coeff * s1 * s2) / len(samples)


def msid_of(sdp, mid):
    """The a=msid stream id of the m-section with a=mid:<mid>."""
    for section in sdp.replace("\r\n", "\n").split("\nm=")[1:]:
        if re.search(rf"^a=mid:{re.escape(mid)}$", section, re.M):
            m = re.search(r"^a=msid:(\S+)", section, re.M)
            return m.group(1) if m else None
    return None


async def call(args):
    """A browser in a call: publishes --file as NAME (WHIP), plays the room
    as NAME (WHEP, --lines video+audio lines), and reports each received
    track with the participant its a=msid names."""
    base = args.url.rstrip("/")
    query = f"?participant={args.participant}"
    out = {"participant": None, "tracks": []}
    t0 = time.monotonic()
    tracks = {}
    tasks = []
    play_pc = new_pc()
    for _ in range(args.lines):
        prefer_codec(play_pc.addTransceiver("video", direction="recvonly"), also_h264=True)
        play_pc.addTransceiver("audio", direction="recvonly")

    async def consume(track, info):
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            if info["first_frame_ms"] is None:
                info["first_frame_ms"] = (time.monotonic() - t0) * 1000
            info["frames"] += 1
            if track.kind == "video":
                info["width"], info["height"] = frame.width, frame.height
                size = f"{frame.width}x{frame.height}"
                if size not in info["sizes"]:
                    info["sizes"].append(size)

    @play_pc.on("track")
    def on_track(track):
        mid = next(
            (t.mid for t in play_pc.getTransceivers() if t.receiver.track is track), None
        )
        # aiortc fires "track" inside setRemoteDescription, before the
        # description is readable: the msid is looked up at the end.
        info = {"mid": mid, "kind": track.kind, "frames": 0, "first_frame_ms": None,
                "width": 0, "height": 0, "sizes": [], "msid": None}
        tracks[id(track)] = info
        tasks.append(asyncio.ensure_future(consume(track, info)))

    pub_pc = None
    async with aiohttp.ClientSession() as s:
        if args.file:
            media = MediaPlayer(args.file, decode=CODEC != "h264")
            pub_pc = new_pc()
            if media.video:
                prefer_codec(pub_pc.addTransceiver(media.video, direction="sendonly"))
            if media.audio:
                pub_pc.addTransceiver(media.audio, direction="sendonly")
            headers = {}
            await exchange(s, f"{base}/whip/{args.room}{query}", pub_pc, headers_out=headers)
            out["participant"] = headers.get("x-participant")
            out["published"] = await wait_connected(pub_pc, 10)
        t0 = time.monotonic()
        headers = {}
        await exchange(s, f"{base}/whep/{args.room}{query}", play_pc, headers_out=headers)
        out["player_participant"] = headers.get("x-participant")
        out["video_codec"] = answered_video_codec(play_pc)
        if pub_pc is not None:
            out["published_codec"] = answered_video_codec(pub_pc)
        out["connected"] = await wait_connected(play_pc, 10)
        print(json.dumps({"event": "joined", "ok": out["connected"]}), flush=True)
        if out["connected"]:
            await asyncio.sleep(args.seconds)
    for info in tracks.values():
        if info["mid"] is not None:
            info["msid"] = msid_of(play_pc.remoteDescription.sdp, info["mid"])
    await play_pc.close()
    if pub_pc is not None:
        await pub_pc.close()
    for t in tasks:
        t.cancel()
    out["tracks"] = sorted(tracks.values(), key=lambda t: int(t["mid"] or 0))
    print(json.dumps(out), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["publish", "play", "call", "direct", "flv-stamps"])
    p.add_argument("url", nargs="?", help="publish/play: the WHIP/WHEP URL; call: the API base URL")
    p.add_argument("room", nargs="?", help="call: the room")
    p.add_argument("participant", nargs="?", help="call: who this browser is")
    p.add_argument("--file")
    p.add_argument("--lavfi", help="publish: an ffmpeg lavfi graph as the camera (encoded by aiortc)")
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--no-delete", action="store_true", help="vanish without DELETE")
    p.add_argument("--encode", action="store_true", help="publish: re-encode (answers PLI)")
    p.add_argument("--bad-fingerprint", action="store_true", help="offer a wrong DTLS fingerprint")
    p.add_argument("--lines", type=int, default=1, help="play: video+audio lines to offer")
    p.add_argument("--loss", type=float, default=0, help="play: drop this share of RTP")
    p.add_argument("--codec", choices=["h264", "vp8"], default="h264",
                   help="video codec: what a publisher sends, what a player takes first")
    p.add_argument("--token", help="a room token (Authorization: Bearer)")
    p.add_argument("--stamp", action="store_true", help="publish: a camera stamping each frame's capture time")
    p.add_argument("--stamps", action="store_true", help="play: read the capture time stamped in each frame")
    p.add_argument("--impair", help="direct: the impairment relay's --up spec on the sender's media")
    p.add_argument("--pli-at", type=float, help="play: send a PLI this many seconds after connecting")
    p.add_argument("--tones", help="play: report the audio's energy at these Hz (comma-separated)")
    args = p.parse_args()
    global TOKEN, CODEC
    TOKEN = args.token
    CODEC = args.codec
    run = {"publish": publish, "play": play, "call": call, "direct": direct, "flv-stamps": flv_stamps}[args.mode]
    asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
