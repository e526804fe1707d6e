#!/usr/bin/env python3
"""Soak: mixed WebRTC, RTP and RTMP load on one shard for MINUTES minutes,
with session churn; the dataplane's RSS, open descriptors and UDP ports are
sampled every minute and must stay flat.

  perf/soak.py [--minutes 30] [--fanout-rate 104] [--json soak.json]

Starts perf/gateway.sh's release gateway (one pinned shard, API
127.0.0.1:18080, RTMP 127.0.0.1:19350) and, for the whole run, three
loadgen processes at once:
  - fanout:  1 SRTP publisher -> 1000 SRTP subscribers at --fanout-rate
             packets/s in (104: 104 k packets/s out of 1200 B, 1 Gbit/s;
             on the 2-core VM of docs/RELIABILITY.md this, with the rest
             and the load tool itself, keeps the shard busy about half the
             time; 200 saturated the machine and the churn's requests
             waited behind 10 ms loop turns),
  - meeting: 5 rooms x 4 WebRTC participants (real ICE and DTLS),
  - rtmp:    1 RTMP publisher (1 Mbit/s) -> 50 RTMP players,
and every minute a churn of 500 RTP sessions created and deleted.
Prints a table (one row a minute) and the loadgen reports; exits non-zero
if RSS grew more than 10 % (after the first minute), or descriptors or
ports did not come back.
"""
import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API = "http://127.0.0.1:18080"
KEY = "loadgen-admin-key-0123456789"
LOADGEN = os.path.join(ROOT, "target/release/loadgen")


def healthz():
    with urllib.request.urlopen(API + "/healthz", timeout=5) as r:
        return json.loads(r.read())


def sample(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    h = healthz()
    return {"rss_kib": rss, "fds": fds, "udp_ports_in_use": h["udp_ports"]["in_use"],
            "status": h["status"], "restarts": h["dataplane"]["restarts"]}


def loadgen(args, seconds, log):
    return subprocess.Popen(
        [LOADGEN, "--api", API, "--rtmp", "127.0.0.1:19350", "--seconds", str(seconds)] + args,
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, MGW_ADMIN_KEY=KEY))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=int, default=30)
    p.add_argument("--fanout-rate", type=int, default=104)
    p.add_argument("--json")
    a = p.parse_args()
    env = dict(os.environ, MGW_ADMIN_KEY=KEY)
    gw_log = open("/tmp/mgw-soak-gateway.log", "w")
    gw = subprocess.Popen(["bash", os.path.join(ROOT, "perf/gateway.sh")], stdout=gw_log,
                          stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 300
    while True:
        try:
            if healthz()["status"] == "ok":
                break
        except OSError:
            pass
        if time.time() > deadline or gw.poll() is not None:
            sys.exit("gateway did not start: /tmp/mgw-soak-gateway.log")
        time.sleep(0.2)
    pid = healthz()["dataplane"]["pid"]
    idle = sample(pid)
    secs = a.minutes * 60
    logs = {}
    procs = []
    for name, args in [
        ("fanout", ["--scenario", "fanout", "--subscribers", "1000", "--rate", str(a.fanout_rate),
                    "--json", "/tmp/soak-fanout.json"]),
        ("meeting", ["--scenario", "meeting", "--rooms", "5", "--participants", "4",
                     "--json", "/tmp/soak-meeting.json"]),
        ("rtmp", ["--scenario", "rtmp", "--subscribers", "50", "--json", "/tmp/soak-rtmp.json"]),
    ]:
        logs[name] = open(f"/tmp/soak-{name}.log", "w")
        procs.append((name, loadgen(args, secs, logs[name])))
    rows = []
    t0 = time.time()
    print(f"{'min':>4} {'rss_kib':>9} {'fds':>6} {'ports':>6} {'status':>7} {'restarts':>8} churn", flush=True)
    for minute in range(a.minutes + 1):
        while time.time() < t0 + minute * 60:
            time.sleep(1)
        row = dict(sample(pid), minute=minute)
        rows.append(row)
        if minute < a.minutes:
            with open("/tmp/soak-churn.log", "a") as churn_log:
                try:
                    churn = subprocess.run(
                        [LOADGEN, "--api", API, "--scenario", "churn", "--sessions", "500",
                         "--subscribers", "50"], stdout=churn_log, stderr=subprocess.STDOUT,
                        env=env, timeout=55)
                    row["churn_ok"] = churn.returncode == 0
                except subprocess.TimeoutExpired:
                    row["churn_ok"] = False
        print(f"{minute:>4} {row['rss_kib']:>9} {row['fds']:>6} {row['udp_ports_in_use']:>6} "
              f"{row['status']:>7} {row['restarts']:>8} {row.get('churn_ok', '-')}", flush=True)
    for name, pr in procs:
        pr.wait(timeout=300)
    time.sleep(3)
    after = sample(pid)
    reports = {}
    for name in ("fanout", "meeting", "rtmp"):
        try:
            with open(f"/tmp/soak-{name}.json") as f:
                reports[name] = json.load(f)
        except (OSError, ValueError):
            reports[name] = None
    gw.terminate()
    gw.wait(15)
    base = rows[1]["rss_kib"] if len(rows) > 1 else rows[0]["rss_kib"]
    peak = max(r["rss_kib"] for r in rows[1:]) if len(rows) > 1 else base
    out = {"minutes": a.minutes, "idle": idle, "after": after, "rows": rows,
           "rss_growth_after_minute_1": round(peak / base - 1, 4), "reports": reports}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    print(json.dumps({k: v for k, v in out.items() if k not in ("rows", "reports")}))
    for name, r in reports.items():
        if r:
            keep = {k: r[k] for k in r if any(s in k for s in
                    ("loss", "p50", "p99", "pps", "mbit", "cpu", "failed", "frames"))}
            print(name, json.dumps(keep))
    ok = (peak <= base * 1.10 and after["fds"] <= idle["fds"] + 2
          and after["udp_ports_in_use"] == idle["udp_ports_in_use"]
          and all(r["restarts"] == 0 for r in rows)
          and all(r.get("churn_ok", True) for r in rows))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    try:
        main()
    finally:
        # Whatever happened, leave no load tool or gateway behind.
        subprocess.run(["pkill", "-f", LOADGEN], check=False)
        subprocess.run(["pkill", "-f", "shm-name mgw-perf"], check=False)
