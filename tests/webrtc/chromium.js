// What the Chromium drivers share: Debian's Chromium launched the way the
// tests need it (fake camera and microphone, no permission prompt, loopback
// ICE, autoplay), and waiting on the demo page's `window.mgw` state.
"use strict";
const { chromium } = require("playwright-core");

exports.launch = () =>
  chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
      "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required",
      // The fake camera's picture, when the test gives one (a y4m file).
      ...(process.env.MGW_FAKE_CAMERA ? [`--use-file-for-fake-video-capture=${process.env.MGW_FAKE_CAMERA}`] : []),
      // Extra flags for a debugging run, e.g. "--enable-logging=stderr --vmodule=*h264*=3".
      ...(process.env.MGW_CHROMIUM_ARGS || "").split(" ").filter(Boolean),
    ],
  });

// Polls `fn` in the page until it returns something truthy (that value),
// or throws after `timeoutMs` with the page's state for the test log.
exports.waitFor = async (page, fn, timeoutMs, what) => {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await page.evaluate(fn);
    if (v) return v;
    if (Date.now() > deadline) {
      const state = await page.evaluate(() =>
        JSON.stringify({ ...window.mgw, pc: null, pubPc: null, tiles: Object.keys(window.mgw.tiles || {}) }));
      throw new Error(`timed out waiting for ${what}: ${state}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
};

// Runs `body(browser, out)` in a launched Chromium, then prints `out` as
// the one JSON line the Rust test reads (with `error` set if it threw).
exports.report = async (body) => {
  const browser = await exports.launch();
  const out = {};
  try {
    await body(browser, out);
  } catch (e) {
    out.error = String(e);
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(out));
};

// Clicks each demo page's Stop (DELETEs its sessions), and lets the
// requests leave before the browser closes.
exports.stop = async (pages) => {
  for (const page of pages) await page.evaluate(() => document.getElementById("stop").click());
  await new Promise((r) => setTimeout(r, 300));
};
