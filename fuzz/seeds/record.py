#!/usr/bin/env python3
"""Records fuzz seeds from real clients (ffmpeg), in each target's input format.

Usage: fuzz/seeds/record.py RTMP_PORT [API_URL UDP_PORTS]
  (a running gateway's RTMP port; `target/debug/controlplane` with defaults
  listens on 1935). Writes fuzz/seeds/{udp_router,h264_rtp,rtmp_hub,rtmp_conn,
  rtmp_chunks,flv_video,avc_config,rtcp_walk,srtp_unprotect,stun_parse}/*.
  With API_URL (e.g. http://127.0.0.1:8080) and the gateway's UDP_PORTS
  (e.g. 40000-40999), also aiortc's datagrams (STUN, DTLS, SRTP, SRTCP) as
  a WHIP publisher and a WHEP player, caught with tcpdump on loopback.

- ffmpeg's RTP (H264 packetization mode 1 and Opus) and its RTCP sender
  reports are caught on a local UDP socket.
- ffmpeg's RTMP publish and play byte streams are caught by a TCP proxy in
  front of the gateway (client to server, after the 3073-byte handshake).
- aiortc (tests/webrtc/aiortc_client.py, the e2e tests' WebRTC client) is
  captured with tcpdump: what it sends to the gateway's UDP ports.

The harness formats are in dataplane/src/fuzz.rs: `[op][len/8][bytes]...`.
"""
import os
import socket
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
CLIP_ARGS = [
    "-f", "lavfi", "-t", "2", "-i", "testsrc=size=320x240:rate=30",
    "-f", "lavfi", "-t", "2", "-i", "sine=frequency=440:sample_rate=48000",
    "-c:v", "libx264", "-profile:v", "baseline", "-g", "30",
    "-bf", "0", "-pix_fmt", "yuv420p", "-b:v", "300k",
]


def save(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def framed(op, data):
    """`[op][len/8][bytes]` entries covering `data` (the harness format)."""
    out = bytearray()
    i = 0
    while i < len(data):
        part = data[i:i + 255 * 8]
        n = len(part) // 8
        if n == 0:
            break
        out += bytes([op, n]) + part[:n * 8]
        i += n * 8
    return bytes(out)


def record_rtp():
    video = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    video.bind(("127.0.0.1", 0))
    audio = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    audio.bind(("127.0.0.1", 0))
    vport, aport = video.getsockname()[1], audio.getsockname()[1]
    ff = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-re"] + CLIP_ARGS + [
            "-map", "0:v", "-f", "rtp", "-payload_type", "96",
            f"rtp://127.0.0.1:{vport}?rtcpport={vport}",
            "-map", "1:a", "-c:a", "libopus", "-f", "rtp", "-payload_type", "111",
            f"rtp://127.0.0.1:{aport}?rtcpport={aport}",
        ], stdout=subprocess.DEVNULL)
    packets = {"v": [], "a": []}

    def drain(sock, key):
        sock.settimeout(1.5)
        try:
            while True:
                packets[key].append(sock.recv(4096))
        except socket.timeout:
            pass

    threads = [threading.Thread(target=drain, args=(s, k)) for s, k in ((video, "v"), (audio, "a"))]
    for t in threads:
        t.start()
    ff.wait()
    for t in threads:
        t.join()
    rtp = [p for p in packets["v"] if len(p) > 1 and not 200 <= p[1] <= 206]
    rtcp = [p for p in packets["v"] + packets["a"] if len(p) > 1 and 200 <= p[1] <= 206]
    opus = [p for p in packets["a"] if len(p) > 1 and not 200 <= p[1] <= 206]
    # udp_router: plain RTP to the ingest (op 0) and as SRTP to the publisher (op 2).
    save("udp_router", "ffmpeg-rtp-ingest", b"".join(framed(0, p) for p in rtp[:60]))
    save("udp_router", "ffmpeg-srtp-publisher",
         b"".join(framed(2, p[:1] + bytes([102]) + p[2:]) for p in rtp[:60]))
    save("udp_router", "ffmpeg-opus-and-rtcp",
         b"".join(framed(2, p[:1] + bytes([111]) + p[2:]) for p in opus[:40])
         + b"".join(framed(3, p) for p in rtcp[:4]))
    # h264_rtp: payloads cut at 61 bytes by the target; keep the first packets whole.
    save("h264_rtp", "ffmpeg-rtp-payloads", b"".join(p[12:] for p in rtp[:20]))
    for i, p in enumerate(rtcp[:4]):
        save("rtcp_walk", f"ffmpeg-rtcp-{i}", p)
    for i, p in enumerate(rtp[:8]):
        save("srtp_unprotect", f"ffmpeg-rtp-{i}", bytes([0x81 + i % 3]) + p)
    print(f"RTP: {len(rtp)} video, {len(opus)} audio, {len(rtcp)} RTCP packets")


def proxy_once(rtmp_port, client_cmd):
    """Runs `client_cmd` against a one-shot proxy; returns client→server bytes."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    port = lst.getsockname()[1]
    got = bytearray()
    done = threading.Event()

    def serve():
        c, _ = lst.accept()
        s = socket.create_connection(("127.0.0.1", rtmp_port))

        def pump(a, b, keep):
            try:
                while True:
                    d = a.recv(65536)
                    if not d:
                        break
                    if keep:
                        got.extend(d)
                    b.sendall(d)
            except OSError:
                pass
            for x in (a, b):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        t = threading.Thread(target=pump, args=(s, c, False))
        t.start()
        pump(c, s, True)
        t.join()
        done.set()

    threading.Thread(target=serve, daemon=True).start()
    subprocess.run([a.replace("PORT", str(port)) for a in client_cmd], timeout=30,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done.wait(5)
    return bytes(got[3073:])  # after C0+C1 (1537) and C2 (1536)


def record_rtmp(rtmp_port):
    publish = proxy_once(rtmp_port, ["ffmpeg", "-nostdin", "-loglevel", "error", "-re"] + CLIP_ARGS + [
        "-map", "0:v", "-map", "1:a", "-c:a", "aac", "-f", "flv", "rtmp://127.0.0.1:PORT/live/seed"])
    play_cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", "rtmp://127.0.0.1:PORT/live/seed",
                "-t", "1", "-f", "null", "-"]
    pub2 = threading.Thread(target=lambda: subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-re"] + CLIP_ARGS + [
            "-map", "0:v", "-map", "1:a", "-c:a", "aac", "-f", "flv",
            f"rtmp://127.0.0.1:{rtmp_port}/live/seed"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    pub2.start()
    import time
    time.sleep(0.7)
    play = proxy_once(rtmp_port, play_cmd)
    pub2.join()
    head = publish[:60000]
    save("rtmp_conn", "ffmpeg-publish", head)
    save("rtmp_conn", "ffmpeg-play", play)
    save("rtmp_chunks", "ffmpeg-publish", head)
    save("rtmp_hub", "ffmpeg-publish-and-play", framed(0, head[:30000]) + framed(1, play))
    # flv_video and avc_config: the FLV video tags of the publish, found by
    # their AVC headers (0x17 0x00 = sequence header, 0x17/0x27 0x01 = NALUs).
    cfg = head.find(b"\x17\x00\x00\x00\x00\x01")
    if cfg >= 0:
        rec = head[cfg + 5:cfg + 200]
        n = int.from_bytes(rec[6:8], "big")
        sps = rec[8:8 + n]
        m = int.from_bytes(rec[9 + n:11 + n], "big")
        pps = rec[11 + n:11 + n + m]
        save("avc_config", "ffmpeg-sps-pps", bytes([len(sps)]) + sps + pps)
        save("flv_video", "ffmpeg-config", head[cfg:cfg + 11 + n + 3 + m])
    print(f"RTMP: {len(publish)} bytes published, {len(play)} bytes from the player")


def udp_payloads(pcap, ports):
    """(dst port, payload) of the IPv4 UDP datagrams to `ports` in a pcap file."""
    import struct
    data = open(pcap, "rb").read()
    endian = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    link = struct.unpack(endian + "I", data[20:24])[0]
    off, out = 24, []
    while off + 16 <= len(data):
        incl = struct.unpack(endian + "I", data[off + 8:off + 12])[0]
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        ip = frame[14:] if link == 1 else frame[16:] if link == 113 else frame[4:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        udp = ip[(ip[0] & 15) * 4:]
        dport = int.from_bytes(udp[2:4], "big")
        if ports[0] <= dport <= ports[1]:
            out.append((dport, bytes(udp[8:])))
    return out


def record_aiortc(api, ports):
    import tempfile
    import time
    root = os.path.dirname(os.path.dirname(HERE))
    py = os.path.join(root, ".venv/bin/python")
    client = os.path.join(root, "tests/webrtc/aiortc_client.py")
    clip = subprocess.run(["ls", os.path.join(root, "target/debug/e2e-media")],
                          capture_output=True, text=True).stdout.split()
    clip = [c for c in clip if c.endswith(".ts")]
    pcap = tempfile.mktemp(suffix=".pcap")
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "-w", pcap, "-U", "udp", "and", "dst",
                             "portrange", f"{ports[0]}-{ports[1]}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    media = ["--file", os.path.join(root, "target/debug/e2e-media", clip[0])] if clip else []
    pub = subprocess.Popen([py, client, "publish", f"{api}/whip/seeds", "--seconds", "4"] + media,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    subprocess.run([py, client, "play", f"{api}/whep/seeds", "--seconds", "2"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    pub.wait(timeout=30)
    time.sleep(0.5)
    dump.terminate()
    dump.wait()
    got = udp_payloads(pcap, ports)
    os.unlink(pcap)
    by_port = {}
    for port, p in got:
        by_port.setdefault(port, []).append(p)
    sessions = sorted(by_port.values(), key=len, reverse=True)
    payloads = [p for _, p in got]
    stun = [p for p in payloads if p and p[0] < 4]
    dtls = [p for p in payloads if p and 20 <= p[0] <= 63]
    srtp = [p for p in payloads if p and 128 <= p[0] <= 191]
    for i, p in enumerate(stun[:3]):
        save("stun_parse", f"aiortc-check-{i}", p)
    for i, p in enumerate(srtp[:4]):
        save("srtp_unprotect", f"aiortc-srtp-{i}", bytes([i % 3]) + p)
    if sessions:
        # The publisher's first datagrams (checks, DTLS flights, SRTP) as the
        # publisher's (op 1), the player's as the player's (op 4).
        seed = b"".join(framed(1, p) for p in sessions[0][:40])
        if len(sessions) > 1:
            seed += b"".join(framed(4, p) for p in sessions[1][:20])
        save("udp_router", "aiortc-publisher-and-player", seed)
    print(f"aiortc: {len(got)} datagrams ({len(stun)} STUN, {len(dtls)} DTLS, {len(srtp)} SRTP/SRTCP)")


if __name__ == "__main__":
    record_rtp()
    record_rtmp(int(sys.argv[1]) if len(sys.argv) > 1 else 1935)
    if len(sys.argv) > 3:
        lo, hi = sys.argv[3].split("-")
        record_aiortc(sys.argv[2], (int(lo), int(hi)))
