// Headless Chromium joins a call on the gateway's demo page as NAME:
// publishes its fake camera (WHIP) and plays everyone else in the room
// (WHEP, one tile per participant, labelled from a=msid). Prints one JSON
// line: {"tiles": [...], "first_other_frame_ms": ms, ...}.
//
//   node chromium_call.js http://127.0.0.1:8080 ROOM NAME SECONDS [SCREENSHOT.png]
//
// Run it inside a network namespace that has only `lo` (TESTING.md).
"use strict";
const { report, stop, waitFor } = require("./chromium");

const [api, room, name] = process.argv.slice(2, 5);
const seconds = Number(process.argv[5] || 5);

report(async (browser, out) => {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${api}/?room=${room}&name=${name}&call=1`);
  await waitFor(page, () => window.mgw.state === "connected" || window.mgw.error, 15000, "call connected");
  out.participant = await page.evaluate(() => window.mgw.participant);
  // Join → the first frame of someone else decoded.
  out.first_other_frame_ms = await waitFor(page, async () => {
    if (window.mgw.error) return -1;
    const tiles = await window.mgw.tileStats();
    return tiles.some((t) => t.framesDecoded > 0) ? performance.now() - window.mgw.t0 : 0;
  }, 20000, "a frame of another participant");
  await new Promise((r) => setTimeout(r, seconds * 1000));
  out.tiles = await page.evaluate(() => window.mgw.tileStats());
  out.labels = await page.evaluate(() => [...document.querySelectorAll(".tile span")].map((s) => s.textContent));
  out.urls = await page.evaluate(() => document.getElementById("urls").innerText);
  if (process.argv[6]) await page.screenshot({ path: process.argv[6] });
  out.error = await page.evaluate(() => window.mgw.error);
  await stop([page]);
});
