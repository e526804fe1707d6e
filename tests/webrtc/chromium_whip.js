// Headless Chromium publishes its fake camera through the gateway's demo
// page (WHIP) and a second page plays the room (WHEP). Prints one JSON line:
// {"publisher": {...}, "player": {...}} with getStats() figures.
//
//   node chromium_whip.js http://127.0.0.1:8080 ROOM SECONDS [SCREENSHOT.png [ADMIN_KEY [CODEC]]]
//
// CODEC (H264, VP8, VP9, AV1; default H264) is the one the publisher sends
// (the demo page's ?codec=); the player offers it first.
//
// Run it inside a network namespace that has only `lo`, next to the
// gateway: Chromium gathers no loopback candidates otherwise (TESTING.md).
"use strict";
const { report, stop, waitFor } = require("./chromium");

const [api, room, seconds] = [process.argv[2], process.argv[3], Number(process.argv[4] || 5)];
const codec = process.argv[7] ? `&codec=${process.argv[7]}` : "";

report(async (browser, out) => {
  const ctx = await browser.newContext();
  const pub = await ctx.newPage();
  await pub.goto(`${api}/?room=${room}&publish=1${codec}`);
  await waitFor(pub, () => window.mgw.state === "connected" || window.mgw.error, 15000, "publisher connected");
  out.publisher_error = await pub.evaluate(() => window.mgw.error);
  const play = await ctx.newPage();
  await play.goto(`${api}/?room=${room}&play=1${codec}`);
  await waitFor(play, async () => {
    const s = await window.mgw.videoStats();
    return (s && s.framesDecoded > 0) || window.mgw.error;
  }, 15000, "first decoded frame");
  await new Promise((r) => setTimeout(r, seconds * 1000));
  out.player = await play.evaluate(() => window.mgw.videoStats());
  // Decoding goes on: a second sample a second later, and a screenshot of
  // the playing page for the test artifacts.
  await new Promise((r) => setTimeout(r, 1000));
  out.player_later = await play.evaluate(() => window.mgw.videoStats());
  if (process.argv[5]) await play.screenshot({ path: process.argv[5] });
  // The demo page's room list, with the admin key: the publisher is there.
  if (process.argv[6]) {
    const admin = await ctx.newPage();
    await admin.goto(`${api}/?key=${encodeURIComponent(process.argv[6])}`);
    await waitFor(admin, () => document.getElementById("rooms").innerText.includes("whip"), 10000, "room list");
    out.rooms_table = await admin.evaluate(() => document.getElementById("rooms").innerText);
  }
  out.player_error = await play.evaluate(() => window.mgw.error);
  out.publisher = await pub.evaluate(() => window.mgw.videoStats());
  await stop([play, pub]);
});
