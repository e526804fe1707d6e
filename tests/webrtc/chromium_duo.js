// Two headless Chromium pages join one call on the demo page, as alice and
// then bob: each must show the other's video under the other's name (alice
// learns bob's name from the signalling's line_changed event, bob from the
// answer's a=msid), both list both participants, and alice's chat message
// reaches bob. Prints one JSON line.
//
//   node chromium_duo.js http://127.0.0.1:8080 ROOM [SCREENSHOT.png [CODEC]]
//
// CODEC (H264, VP8, VP9, AV1; default H264): what both pages send (the
// demo page's ?codec=).
//
// Run it inside a network namespace that has only `lo` (TESTING.md).
"use strict";
const { report, stop, waitFor } = require("./chromium");

const [api, room, shot, codecArg] = process.argv.slice(2, 6);
const codec = codecArg ? `&codec=${codecArg}` : "";

report(async (browser, out) => {
  const ctx = await browser.newContext();
  const alice = await ctx.newPage();
  await alice.goto(`${api}/?room=${room}&name=alice&call=1${codec}`);
  await waitFor(alice, () => window.mgw.state === "connected" || window.mgw.error, 15000, "alice connected");
  const bob = await ctx.newPage();
  await bob.goto(`${api}/?room=${room}&name=bob&call=1${codec}`);
  await waitFor(bob, () => window.mgw.state === "connected" || window.mgw.error, 15000, "bob connected");
  out.bob_sees_alice_ms = await waitFor(bob, async () => {
    const t = (await window.mgw.tileStats()).find((t) => t.name === "alice" && t.framesDecoded > 0);
    return t ? performance.now() - window.mgw.t0 : 0;
  }, 25000, "bob sees alice");
  out.alice_sees_bob_ms = await waitFor(alice, async () => {
    const t = (await window.mgw.tileStats()).find((t) => t.name === "bob" && t.framesDecoded > 0);
    return t ? performance.now() - window.mgw.t0 : 0;
  }, 25000, "alice sees bob");
  await waitFor(bob, () => window.mgw.people && window.mgw.people.alice !== undefined, 5000, "bob lists alice");
  await alice.fill("#say", "hello bob");
  await alice.click("#send");
  await waitFor(bob, () => (window.mgw.chat || []).some((m) => m.from === "alice" && m.text === "hello bob"), 5000, "bob gets the chat");
  await new Promise((r) => setTimeout(r, 2000));
  for (const [who, page] of [["alice", alice], ["bob", bob]]) {
    out[who] = await page.evaluate(async () => ({
      tiles: await window.mgw.tileStats(),
      people: Object.keys(window.mgw.people || {}).sort(),
      chat: window.mgw.chat,
      error: window.mgw.error,
    }));
  }
  if (shot) await alice.screenshot({ path: shot });
  await stop([alice, bob]);
});
