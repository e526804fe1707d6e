#!/usr/bin/env python3
"""Chaos runs against a real gateway on loopback (stdlib only).

  perf/chaos.py kill   SIGKILL the dataplane while SESSIONS sessions stream:
                       time to a restarted dataplane, to the first new
                       session, and every session ended with an event
  perf/chaos.py stop   SIGSTOP the controlplane for 5 s under load: media
                       keeps flowing (packets/s at the players during the
                       stop), and the API answers again after SIGCONT

Starts its own release gateway (target/release/controlplane, spawn mode,
one shard, API on 127.0.0.1:18280, RTMP off) and stops it at the end.
Prints one JSON object with the figures; exits non-zero if a check fails.
Options: --sessions N (default 200), --rate PPS per publisher (default 100).
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API = "http://127.0.0.1:18280"
KEY = "chaos-admin-key-0123456789"


def call(method, path, body=None, timeout=5):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(API + path, data=data, method=method)
    req.add_header("authorization", f"Bearer {KEY}")
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


def start_gateway():
    subprocess.run(["rm", "-f", "/dev/shm/mgw-chaos"])
    log = open("/tmp/mgw-chaos.log", "w")
    gw = subprocess.Popen(
        [os.path.join(ROOT, "target/release/controlplane"), "--http", "127.0.0.1:18280",
         "--rtmp", "off", "--shards", "1", "--shm-name", "mgw-chaos",
         "--udp-ports", "25000-25999", "--session-rate", "100000",
         "--session-burst", "100000", "--admin-key", KEY],
        stdout=log, stderr=log)
    deadline = time.time() + 20
    while time.time() < deadline:
        if call("GET", "/healthz")[0] == 200:
            return gw
        time.sleep(0.05)
    gw.kill()
    sys.exit("gateway did not become healthy: see /tmp/mgw-chaos.log")


def stop_gateway(gw):
    gw.send_signal(signal.SIGCONT)
    gw.terminate()
    try:
        gw.wait(10)
    except subprocess.TimeoutExpired:
        gw.kill()
        gw.wait()


class Events:
    """The room's SSE stream, collected on a thread."""

    def __init__(self, room):
        self.items = []
        req = urllib.request.Request(f"{API}/v1/rooms/{room}/events")
        req.add_header("authorization", f"Bearer {KEY}")
        self.resp = urllib.request.urlopen(req, timeout=60)
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        try:
            for line in self.resp:
                line = line.decode().strip()
                if line.startswith("data: "):
                    self.items.append(json.loads(line[6:]))
        except (OSError, ValueError):
            pass


def rtp(seq, ssrc=0x1234):
    return bytes([0x80, 96]) + seq.to_bytes(2, "big") + (seq * 3000 % 2**32).to_bytes(4, "big") \
        + ssrc.to_bytes(4, "big") + b"\x00" * 1000


def setup_room(sessions):
    """One RTP ingest and sessions-1 egresses to one sink socket."""
    call("POST", "/v1/rooms", {"name": "chaos"})
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sink.bind(("127.0.0.1", 0))
    code, ingest = call("POST", "/v1/rooms/chaos/ingest/rtp", {"kind": "video"})
    assert code == 201, ingest
    for _ in range(sessions - 1):
        code, e = call("POST", "/v1/rooms/chaos/egress/rtp",
                       {"host": "127.0.0.1", "port": sink.getsockname()[1]})
        assert code == 201, e
    return ingest, sink


class Sender(threading.Thread):
    def __init__(self, port, rate):
        super().__init__(daemon=True)
        self.port, self.rate, self.stop = port, rate, False

    def run(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        seq, t = 0, time.time()
        while not self.stop:
            s.sendto(rtp(seq), ("127.0.0.1", self.port))
            seq = (seq + 1) % 65536
            t += 1 / self.rate
            time.sleep(max(0, t - time.time()))


class Counter(threading.Thread):
    """Datagrams the sink received, per 100 ms bucket since start."""

    def __init__(self, sock):
        super().__init__(daemon=True)
        self.sock, self.t0, self.buckets = sock, time.time(), {}
        sock.settimeout(0.2)

    def run(self):
        while True:
            try:
                self.sock.recv(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            b = int((time.time() - self.t0) * 10)
            self.buckets[b] = self.buckets.get(b, 0) + 1

    def rate(self, since, until):
        """Datagrams/s received between two times (seconds since start)."""
        n = sum(v for k, v in self.buckets.items() if since * 10 <= k < until * 10)
        return n / max(until - since, 0.1)


def kill_scenario(args):
    gw = start_gateway()
    try:
        ingest, sink = setup_room(args.sessions)
        events = Events("chaos")
        counter = Counter(sink)
        counter.start()
        sender = Sender(ingest["port"], args.rate)
        sender.start()
        time.sleep(3)
        before = counter.rate(1, 3)
        pid = call("GET", "/healthz")[1]["dataplane"]["pid"]
        t0 = time.time()
        os.kill(pid, signal.SIGKILL)
        restarted = healthy = first_session = None
        while time.time() - t0 < 15 and first_session is None:
            code, h = call("GET", "/healthz", timeout=1)
            if restarted is None and code in (200, 503) and isinstance(h, dict) \
                    and h["dataplane"]["pid"] not in (0, pid):
                restarted = time.time() - t0
            if healthy is None and code == 200 and h["dataplane"]["pid"] != pid:
                healthy = time.time() - t0
            if healthy is not None:
                code, v = call("POST", "/v1/rooms/chaos/ingest/rtp", {"kind": "audio"}, timeout=5)
                if code == 201:
                    first_session = time.time() - t0
            time.sleep(0.01)
        time.sleep(1.5)
        failed = [e for e in events.items if e["event"] == "session_failed"]
        restarted_reason = [e for e in failed if "dataplane" in (e.get("reason") or "")]
        _, room = call("GET", "/v1/rooms/chaos")
        # The room lists its last 64 ended sessions; what must not be left is a live old one.
        live_old = sum(1 for s in room["ingests"] + room["egresses"]
                       if s["state"] == "live" and s["id"] != v["id"])
        sender.stop = True
        out = {
            "scenario": "kill", "sessions": args.sessions,
            "datagrams_per_s_before": round(before),
            "dataplane_pid_changed_s": restarted and round(restarted, 3),
            "healthy_s": healthy and round(healthy, 3),
            "first_new_session_s": first_session and round(first_session, 3),
            "old_sessions_still_live": live_old,
            "session_failed_events": len(failed),
            "of_them_for_the_dataplane": len(restarted_reason),
            "reason": restarted_reason[0]["reason"] if restarted_reason else None,
        }
        print(json.dumps(out))
        ok = first_session is not None and first_session < 2.0 \
            and live_old == 0 and len(restarted_reason) == args.sessions
        return 0 if ok else 1
    finally:
        stop_gateway(gw)


def stop_scenario(args):
    gw = start_gateway()
    try:
        ingest, sink = setup_room(args.sessions)
        counter = Counter(sink)
        counter.start()
        sender = Sender(ingest["port"], args.rate)
        sender.start()
        time.sleep(3)
        t_stop = time.time() - counter.t0
        os.kill(gw.pid, signal.SIGSTOP)
        time.sleep(5)
        os.kill(gw.pid, signal.SIGCONT)
        t_cont = time.time() - counter.t0
        t0 = time.time()
        api_back = None
        while time.time() - t0 < 10:
            if call("GET", "/v1/rooms/chaos", timeout=1)[0] == 200:
                api_back = time.time() - t0
                break
            time.sleep(0.01)
        code, v = call("POST", "/v1/rooms/chaos/egress/rtp",
                       {"host": "127.0.0.1", "port": sink.getsockname()[1]})
        time.sleep(1)
        sender.stop = True
        before = counter.rate(1, t_stop)
        during = counter.rate(t_stop, t_cont)
        out = {
            "scenario": "stop", "sessions": args.sessions, "stopped_s": 5,
            "datagrams_per_s_before": round(before),
            "datagrams_per_s_during_stop": round(during),
            "api_answers_after_cont_s": api_back and round(api_back, 3),
            "new_session_after_cont": code,
        }
        print(json.dumps(out))
        ok = during >= 0.95 * before and api_back is not None and code == 201
        return 0 if ok else 1
    finally:
        stop_gateway(gw)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=["kill", "stop"])
    p.add_argument("--sessions", type=int, default=200)
    p.add_argument("--rate", type=int, default=100)
    a = p.parse_args()
    sys.exit({"kill": kill_scenario, "stop": stop_scenario}[a.scenario](a))
