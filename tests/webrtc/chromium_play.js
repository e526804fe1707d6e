// Headless Chromium plays ROOM over WHEP on the gateway's demo page and
// reports what its <video> got: frames decoded and dropped, freezes, and
// the presented frames' RTP times (how often one went back); the loudest
// audio level its receivers saw (audioLevelMax, null if none); and a
// timeline, each second, of video frames decoded and audio samples received.
//
//   node chromium_play.js http://127.0.0.1:8080 ROOM SECONDS
"use strict";
const { report, stop, waitFor } = require("./chromium");

const [api, room] = process.argv.slice(2, 4);
const seconds = Number(process.argv[4] || 5);

report(async (browser, out) => {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${api}/?room=${room}&play=1`);
  await waitFor(page, async () => window.mgw.error || ((await window.mgw.videoStats()) || {}).framesDecoded > 0,
    20000, "a decoded frame");
  out.first = await page.evaluate(() => window.mgw.videoStats());
  // Meanwhile the loudest RFC 6464 level its audio receivers report (the
  // gateway writes each packet's level under the page's own id).
  out.audioLevelMax = null;
  // Each second: video frames decoded and audio samples received so far,
  // from the page's start (what froze and what went on, second by second).
  out.timeline = [];
  const t0 = Date.now();
  let next = t0;
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    if (Date.now() >= next) {
      next += 1000;
      const sample = await page.evaluate(async () => {
        const out = { frames: 0, samples: 0 };
        (await window.mgw.pc.getStats()).forEach((s) => {
          if (s.type !== "inbound-rtp") return;
          if (s.kind === "video") out.frames += s.framesDecoded || 0;
          if (s.kind === "audio") out.samples += s.totalSamplesReceived || 0;
        });
        return out;
      });
      out.timeline.push({ t: Math.round((Date.now() - t0) / 1000), ...sample });
    }
    const level = await page.evaluate(() => Math.max(-1, ...window.mgw.pc.getReceivers()
      .filter((r) => r.track && r.track.kind === "audio")
      .flatMap((r) => r.getSynchronizationSources().map((s) => s.audioLevel ?? -1))));
    if (level >= 0) out.audioLevelMax = Math.max(out.audioLevelMax ?? 0, level);
    await new Promise((r) => setTimeout(r, 200));
  }
  out.later = await page.evaluate(() => window.mgw.videoStats());
  out.error = await page.evaluate(() => window.mgw.error);
  await stop([page]);
});
