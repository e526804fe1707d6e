// How fast a Chromium publisher's video bitrate ramps up: through the
// gateway (the demo page's WHIP publish), or over a direct peer connection
// to a second RTCPeerConnection in the same page (Chromium on both ends:
// the transport-cc feedback a browser gives). The fake camera plays the y4m
// file the test passes (--use-file-for-fake-video-capture), at 640x360 as
// the demo page asks. Prints one JSON
// line: {"kbps": [per second], "mean_6_20": kbps, ...}.
//
//   node chromium_rampup.js http://127.0.0.1:8080 ROOM gateway|direct SECONDS CLIP.y4m [NAME]
"use strict";
const { report, waitFor } = require("./chromium");

const [api, room, mode] = process.argv.slice(2, 5);
const seconds = Number(process.argv[5] || 20);
const clip = process.argv[6];
const name = process.argv[7];

report(async (browser, out) => {
  const page = await (await browser.newContext()).newPage();
  if (mode === "gateway") {
    const as = name ? `&name=${name}` : "";
    await page.goto(`${api}/?room=${room}${as}&publish=1`);
    await waitFor(page, () => window.mgw.state === "connected" || window.mgw.error, 15000, "publisher connected");
  } else {
    await page.goto(`${api}/?room=${room}`);
    await page.evaluate(async () => {
      const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360 } });
      const a = new RTCPeerConnection(), b = new RTCPeerConnection();
      a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
      b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
      const t = a.addTransceiver(stream.getVideoTracks()[0], { direction: "sendonly" });
      const h264 = RTCRtpReceiver.getCapabilities("video").codecs.filter((c) =>
        c.mimeType === "video/H264" && (c.sdpFmtpLine || "").includes("packetization-mode=1"));
      const rtx = RTCRtpReceiver.getCapabilities("video").codecs.filter((c) => c.mimeType === "video/rtx");
      t.setCodecPreferences([...h264, ...rtx]);
      await a.setLocalDescription(await a.createOffer());
      await b.setRemoteDescription(a.localDescription);
      await b.setLocalDescription(await b.createAnswer());
      await a.setRemoteDescription(b.localDescription);
      window.mgw.pc = a;
      window.mgw.direct = b;
    });
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
});
