// Headless Chromium plays NAME over HTTP-FLV on the gateway's demo page
// (flv.js, served by the gateway, into a <video> through Media Source
// Extensions), as a browser stands in for a mini-program's live-player.
// Prints one JSON line: {"first_frame_ms", "first", "later", "error"}.
//
//   node chromium_flv.js http://127.0.0.1:8080 ROOM NAME SECONDS [SCREENSHOT.png]
"use strict";
const { report, stop, waitFor } = require("./chromium");

const [api, room, name] = process.argv.slice(2, 5);
const seconds = Number(process.argv[5] || 3);

report(async (browser, out) => {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${api}/?room=${room}&flv=${name}`);
  out.first_frame_ms = await waitFor(page, () => {
    if (window.mgw.error) return -1;
    return window.mgw.flvStats().frames > 0 ? performance.now() - window.mgw.t0 : 0;
  }, 20000, "a frame decoded by flv.js");
  out.first = await page.evaluate(() => window.mgw.flvStats());
  await new Promise((r) => setTimeout(r, seconds * 1000));
  out.later = await page.evaluate(() => window.mgw.flvStats());
  out.script = await page.evaluate(() => [...document.scripts].map((s) => s.src).filter(Boolean));
  if (process.argv[6]) await page.screenshot({ path: process.argv[6] });
  out.error = await page.evaluate(() => window.mgw.error);
  await stop([page]);
});
