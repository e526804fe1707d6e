// Headless Chromium plays ROOM over WHEP on the gateway's demo page and
// reports what its <video> got: frames decoded and dropped, freezes, and
// the presented frames' RTP times (how often one went back).
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
  await new Promise((r) => setTimeout(r, seconds * 1000));
  out.later = await page.evaluate(() => window.mgw.videoStats());
  out.error = await page.evaluate(() => window.mgw.error);
  await stop([page]);
});
