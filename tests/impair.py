#!/usr/bin/env python3
"""A network impairment relay for UDP (netem is not available on these
machines): it stands between WebRTC clients and the gateway on loopback and
applies a bandwidth cap (a token bucket with a bounded queue), added delay,
jitter, reordering and loss to each direction, changeable over time.

    impair.py --listen 127.0.0.2 --ports 42000-42024 --to 127.0.0.1 \\
        --up rate=3000k,queue=300ms --script "10:up:rate=500k;30:up:rate=3000k"

Run the gateway with `--public-ip 127.0.0.2` (its answers then name the
relay's address with the gateway's own port numbers): a client sends to
127.0.0.2:PORT, the relay forwards to 127.0.0.1:PORT from a socket of its
own, and the gateway's answers come back the same way. `up` is client →
gateway, `down` gateway → client. A spec is comma-separated key=value:

    rate=500k      cap in bit/s (k, M suffixes); none: no cap
    queue=300ms    longest a packet may wait for the cap (then dropped)
    delay=40ms     added one-way delay
    jitter=10ms    plus a uniform random 0..jitter (reorders when above the packet gap)
    reorder=0.02   share of packets held back 20 ms more (arrive after later ones)
    loss=0.05      share of packets dropped at random

Every second it prints one JSON line per direction with what it did in that
second (kbit/s offered and passed, packets, drops by cause, packets held back
for reordering, queueing delay p50/p95/max); on
SIGTERM/SIGINT a summary line ({"summary": ...}). Seeded (--seed) so runs
repeat.
"""

import argparse
import asyncio
import json
import random
import signal
import sys
import time


def parse_amount(v, unit_scale):
    v = v.strip()
    for suffix, scale in unit_scale:
        if v.endswith(suffix):
            return float(v[: -len(suffix)]) * scale
    return float(v)


def parse_spec(text, base=None):
    spec = dict(base or {"rate": None, "queue": 0.3, "delay": 0.0, "jitter": 0.0, "reorder": 0.0, "loss": 0.0})
    for part in filter(None, (text or "").split(",")):
        k, _, v = part.partition("=")
        k = k.strip()
        if k == "rate":
            spec["rate"] = None if v in ("none", "0", "") else parse_amount(v, [("k", 1e3), ("M", 1e6)])
        elif k in ("queue", "delay", "jitter"):
            spec[k] = parse_amount(v, [("ms", 1e-3), ("s", 1.0)])
        elif k in ("reorder", "loss"):
            spec[k] = float(v)
        else:
            raise SystemExit(f"unknown impairment {k!r} in {text!r}")
    return spec


class Link:
    """One direction: loss, then the cap's queue, then delay, jitter, reordering."""

    def __init__(self, name, spec, rng):
        self.name = name
        self.spec = spec
        self.rng = rng
        self.busy_until = 0.0
        self.reset_stats()
        self.total = {"packets": 0, "bytes": 0, "lost": 0, "queue_drops": 0}

    def reset_stats(self):
        self.stats = {"offered": 0, "packets": 0, "bytes": 0, "lost": 0, "queue_drops": 0,
                      "reordered": 0, "waits": []}

    def send(self, loop, data, deliver):
        s, now = self.spec, loop.time()
        self.stats["offered"] += len(data)
        if self.rng.random() < s["loss"]:
            self.stats["lost"] += 1
            self.total["lost"] += 1
            return
        wait = 0.0
        if s["rate"]:
            start = max(now, self.busy_until)
            wait = start - now
            if wait > s["queue"]:
                self.stats["queue_drops"] += 1
                self.total["queue_drops"] += 1
                return
            self.busy_until = start + len(data) * 8 / s["rate"]
            wait = self.busy_until - now
        extra = s["delay"] + (self.rng.random() * s["jitter"] if s["jitter"] else 0.0)
        if s["reorder"] and self.rng.random() < s["reorder"]:
            extra += 0.020
            self.stats["reordered"] += 1
        self.stats["packets"] += 1
        self.stats["bytes"] += len(data)
        self.stats["waits"].append(wait)
        self.total["packets"] += 1
        self.total["bytes"] += len(data)
        loop.call_later(wait + extra, deliver, data)

    def report(self, t):
        waits = sorted(self.stats["waits"])
        pick = lambda q: round(waits[min(len(waits) - 1, int(q * len(waits)))] * 1000, 1) if waits else 0.0
        out = {"t": t, "dir": self.name, "rate": self.spec["rate"],
               "offered_kbps": round(self.stats["offered"] * 8 / 1000),
               "packets": self.stats["packets"], "kbps": round(self.stats["bytes"] * 8 / 1000),
               "lost": self.stats["lost"], "queue_drops": self.stats["queue_drops"],
               "reordered": self.stats["reordered"],
               "wait_ms_p50": pick(0.5), "wait_ms_p95": pick(0.95),
               "wait_ms_max": round(waits[-1] * 1000, 1) if waits else 0.0}
        self.reset_stats()
        return out


class Port(asyncio.DatagramProtocol):
    """One relayed port: clients on the listen side, one upstream socket each."""

    def __init__(self, relay, port):
        self.relay, self.port = relay, port
        self.upstreams = {}

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, client):
        relay = self.relay
        up = self.upstreams.get(client)
        if up is None:
            up = self.upstreams[client] = Upstream(self, client)
            asyncio.ensure_future(relay.loop.create_datagram_endpoint(
                lambda: up, remote_addr=(relay.to, self.port)))
        relay.up.send(relay.loop, data, up.send)


class Upstream(asyncio.DatagramProtocol):
    def __init__(self, port, client):
        self.port, self.client = port, client
        self.transport = None
        self.pending = []

    def connection_made(self, transport):
        self.transport = transport
        for d in self.pending:
            transport.sendto(d)
        self.pending = []

    def send(self, data):
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.sendto(data)

    def datagram_received(self, data, addr):
        port = self.port
        port.relay.down.send(port.relay.loop, data, lambda d: port.transport.sendto(d, self.client))


class Relay:
    def __init__(self, args):
        self.loop = asyncio.get_running_loop()
        rng = random.Random(args.seed)
        self.to = args.to
        self.up = Link("up", parse_spec(args.up), rng)
        self.down = Link("down", parse_spec(args.down), rng)
        self.script = []
        for step in filter(None, (args.script or "").split(";")):
            at, direction, spec = step.split(":", 2)
            self.script.append((float(at), direction, spec))


async def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", default="127.0.0.2")
    p.add_argument("--ports", required=True, help="FIRST-LAST")
    p.add_argument("--to", default="127.0.0.1")
    p.add_argument("--up", default="")
    p.add_argument("--down", default="")
    p.add_argument("--script", default="", help="T:up|down:SPEC;... (T seconds from start)")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    relay = Relay(args)
    first, _, last = args.ports.partition("-")
    for port in range(int(first), int(last or first) + 1):
        await relay.loop.create_datagram_endpoint(lambda port=port: Port(relay, port),
                                                  local_addr=(args.listen, port))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        relay.loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"ready": True, "listen": args.listen, "ports": args.ports}), flush=True)
    t0 = time.monotonic()
    script = sorted(relay.script)
    second = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, t0 + second + 1 - time.monotonic()))
        except asyncio.TimeoutError:
            pass
        second += 1
        for link in (relay.up, relay.down):
            print(json.dumps(link.report(second)), flush=True)
        while script and script[0][0] <= second:
            _, direction, spec = script.pop(0)
            link = relay.up if direction == "up" else relay.down
            link.spec = parse_spec(spec, link.spec)
            print(json.dumps({"t": second, "dir": direction, "now": link.spec}), flush=True)
    print(json.dumps({"summary": {"up": relay.up.total, "down": relay.down.total}}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
