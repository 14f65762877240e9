// The two-window demo (`broker --demo`) in headless Debian chromium.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { startBroker, launchBrowser } from "./harness.mjs";

const here = dirname(fileURLToPath(import.meta.url));
// `make screenshot` refreshes the README's picture; otherwise it goes to a scratch file.
const SCREENSHOT = process.env.UPDATE_SCREENSHOT
  ? join(here, "..", "..", "docs", "demo.png")
  : join(process.env.TMPDIR ?? "/tmp", "broker-demo.png");

const currentName = (page) => page.locator("#current").textContent();
const waitForName = (page, name, timeout = 5000) =>
  page.waitForFunction((n) => document.querySelector("#current")?.textContent === n, name, { timeout });

test("two windows: typing in one shows in the other; reload keeps it; a restart loses nothing", async () => {
  let broker = await startBroker(["--demo", "--no-auth"]);
  const browser = await launchBrowser();
  try {
    const context = await browser.newContext({ viewport: { width: 900, height: 760 } });
    const [a, b] = [await context.newPage(), await context.newPage()];
    for (const page of [a, b]) {
      await page.goto(`${broker.url}/demo`);
      await page.waitForSelector("#status.live");
    }

    const started = Date.now();
    await a.locator("#name").pressSequentially("Ada", { delay: 20 });
    await waitForName(b, "Ada");
    console.log(`typing in one window reached the other ${Date.now() - started} ms after the first key`);

    await b.reload();
    await b.waitForSelector("#status.live");
    assert.equal(await currentName(b), "Ada", "a refresh keeps the name");
    assert.equal(await b.inputValue("#name"), "Ada");
    const versions = await b.locator("#audit li").count();
    assert.equal(versions, 3, "the audit panel lists every version: A, Ad, Ada");

    // Cut the connection: kill the server, restart it, and write while the page reconnects.
    const receivedBefore = await b.evaluate(() => window.brokerDemo.received.length);
    const { port, db } = broker;
    await broker.kill();
    await b.waitForSelector("#status.down");
    broker = await startBroker(["--demo", "--no-auth"], { db, port });
    const names = ["Grace", "Grace H", "Grace Hopper"];
    for (const name of names) {
      const res = await fetch(`${broker.url}/insert`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ event: "user", data: { name } }),
      });
      assert.equal(res.status, 200);
    }
    await waitForName(b, "Grace Hopper", 15_000);
    const received = await b.evaluate((n) => window.brokerDemo.received.slice(n), receivedBefore);
    assert.deepEqual(received.map((d) => d.name), names, "every version written meanwhile, once, in order");
    await b.waitForFunction(() => document.querySelectorAll("#audit li").length === 6);
    await waitForName(a, "Grace Hopper", 15_000);
    assert.equal(await a.inputValue("#name"), "Grace Hopper", "a name from elsewhere fills the field");

    await a.screenshot({ path: SCREENSHOT, fullPage: true });
  } finally {
    await browser.close();
    await broker.stop();
  }
});

test("with authentication on, the page offers signup and login", async () => {
  const broker = await startBroker(["--demo"]);
  const browser = await launchBrowser();
  try {
    const context = await browser.newContext();
    const a = await context.newPage();
    await a.goto(`${broker.url}/demo`);
    await a.waitForSelector("#login:not([hidden])");
    assert.equal(await a.isHidden("#app"), true, "nothing is shown before login");
    await a.fill("#username", "ada");
    await a.fill("#password", "short");
    await a.click("#signup");
    await a.waitForFunction(() => document.querySelector("#login-error").textContent.includes("password"));
    await a.fill("#password", "correct horse battery");
    await a.click("#signup");
    await a.waitForSelector("#status.live");
    await a.fill("#name", "Grace");
    await waitForName(a, "Grace");

    // A second window of the same browser shares the login.
    const b = await context.newPage();
    await b.goto(`${broker.url}/demo`);
    await b.waitForSelector("#status.live");
    assert.equal(await currentName(b), "Grace");
    await a.fill("#name", "Ada");
    await waitForName(b, "Ada");

    // Someone else's browser must log in first.
    const stranger = await (await browser.newContext()).newPage();
    await stranger.goto(`${broker.url}/demo`);
    await stranger.waitForSelector("#login:not([hidden])");
    const res = await fetch(`${broker.url}/insert`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ event: "user", data: { name: "anonymous" } }),
    });
    assert.equal(res.status, 401);
  } finally {
    await browser.close();
    await broker.stop();
  }
});
