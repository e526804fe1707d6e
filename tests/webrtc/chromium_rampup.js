// How fast a Chromium publisher's video bitrate ramps up: through the
// gateway (the demo page's WHIP publish), or over a direct peer connection
// to a second RTCPeerConnection in the same page (Chromium on both ends:
// the transport-cc feedback a browser gives). The fake camera plays the y4m
// file the test passes (--use-file-for-fake-video-capture), at 640x360 as
// the demo page asks. Prints one JSON
// line: {"kbps": [per second], "mean_6_20": kbps, ...}.
//
//   node chromium_rampup.js http://127.0.0.1:8080 ROOM gateway|direct SECONDS CLIP.y4m [NAME]
//
// direct with MGW_DIRECT_UP=SPEC (and MGW_DIRECT_SCRIPT, MGW_PYTHON): the
// sending connection reaches the receiving one only through
// tests/impair.py (its candidates are moved to the relay's 127.0.0.2),
// whose per-second reports come back in "relay": the same-run baseline of
// a test that impairs the gateway's publisher leg the same way.
"use strict";
const { spawn } = require("child_process");
const path = require("path");
const readline = require("readline");
const { report, waitFor } = require("./chromium");

const [api, room, mode] = process.argv.slice(2, 5);
const seconds = Number(process.argv[5] || 20);
const clip = process.argv[6];
const name = process.argv[7];
let relayProcess = null;

report(async (browser, out) => {
  const page = await (await browser.newContext()).newPage();
  if (mode === "gateway") {
    const as = name ? `&name=${name}` : "";
    await page.goto(`${api}/?room=${room}${as}&publish=1`);
    await waitFor(page, () => window.mgw.state === "connected" || window.mgw.error, 15000, "publisher connected");
  } else {
    await page.goto(`${api}/?room=${room}`);
    const up = process.env.MGW_DIRECT_UP;
    if (up !== undefined) {
      out.relay = [];
      await page.exposeFunction("startRelay", (port) => new Promise((resolve) => {
        const relay = spawn(process.env.MGW_PYTHON || "python3", [
          path.join(__dirname, "..", "impair.py"), "--listen", "127.0.0.2", "--to", "127.0.0.1",
          "--ports", String(port), "--up", up, "--script", process.env.MGW_DIRECT_SCRIPT || "",
        ], { stdio: ["ignore", "pipe", "inherit"] });
        relayProcess = relay;
        readline.createInterface({ input: relay.stdout }).on("line", (line) => {
          const v = JSON.parse(line);
          if (v.ready) resolve(true); else out.relay.push(v);
        });
      }));
    }
    await page.evaluate(async (relayed) => {
      const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360 } });
      const a = new RTCPeerConnection(), b = new RTCPeerConnection();
      // Relayed, b learns a only from a's checks through the relay: told
      // a's own candidates, b's checks would open a direct path a could pick.
      a.onicecandidate = (e) => e.candidate && !relayed && b.addIceCandidate(e.candidate);
      let relayPort = null;
      b.onicecandidate = async (e) => {
        if (!e.candidate) return;
        if (!relayed) return a.addIceCandidate(e.candidate);
        // Only b's loopback IPv4 candidate, moved to the relay: a has no
        // other way to b.
        const m = / 127\.0\.0\.1 (\d+) typ host/.exec(e.candidate.candidate);
        if (!m || relayPort !== null) return;
        relayPort = m[1];
        await window.startRelay(Number(relayPort));
        await a.addIceCandidate({
          candidate: e.candidate.candidate.replace(` 127.0.0.1 ${relayPort} `, ` 127.0.0.2 ${relayPort} `),
          sdpMid: e.candidate.sdpMid, sdpMLineIndex: e.candidate.sdpMLineIndex,
        });
      };
      const t = a.addTransceiver(stream.getVideoTracks()[0], { direction: "sendonly" });
      const h264 = RTCRtpReceiver.getCapabilities("video").codecs.filter((c) =>
        c.mimeType === "video/H264" && (c.sdpFmtpLine || "").includes("packetization-mode=1"));
      const rtx = RTCRtpReceiver.getCapabilities("video").codecs.filter((c) => c.mimeType === "video/rtx");
      t.setCodecPreferences([...h264, ...rtx]);
      await a.setLocalDescription(await a.createOffer());
      await b.setRemoteDescription(a.localDescription);
      await b.setLocalDescription(await b.createAnswer());
      const answer = b.localDescription.sdp.replace(/a=candidate:.*\r\n/g, "");
      await a.setRemoteDescription({ type: "answer", sdp: answer });
      window.mgw.pc = a;
      window.mgw.direct = b;
    }, up !== undefined);
  }
  const sent = () => page.evaluate(async () => {
    let bytes = 0, frames = 0, width = 0, limit = null;
    (await window.mgw.pc.getStats()).forEach((s) => {
      if (s.type === "outbound-rtp" && s.kind === "video") {
        bytes += s.bytesSent; frames = s.framesEncoded; width = s.frameWidth;
        limit = s.qualityLimitationReason;
      }
    });
    return { bytes, frames, width, limit };
  });
  out.kbps = [];
  let last = await sent();
  for (let i = 0; i < seconds; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = await sent();
    out.kbps.push(Math.round((now.bytes - last.bytes) * 8 / 1000));
    last = now;
  }
  const tail = out.kbps.slice(6, 20);
  out.mean_6_20 = Math.round(tail.reduce((a, b) => a + b, 0) / Math.max(tail.length, 1));
  out.last = last;
  out.clip = clip;
  out.error = await page.evaluate(() => window.mgw.error);
  if (relayProcess) {
    // Its last reports come as it stops: wait for its output to close.
    const closed = new Promise((r) => relayProcess.on("close", r));
    relayProcess.kill("SIGTERM");
    await closed;
  }
});
