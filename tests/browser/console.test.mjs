// The admin console (`/admin`) in headless Debian chromium: admins only; create a user, narrow
// their rights and see a 403 follow; an insert appears in the live tail (with filter and
// pause); a revocation ends the user's open stream; presence by channel; the server page
// draws its charts; an admin with a second factor is asked for the code.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { startBroker, launchBrowser } from "./harness.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const PASSWORD = "correct horse battery";
// `UPDATE_SCREENSHOT=1` refreshes the README's pictures in docs/; otherwise scratch files.
const shot = (name) =>
  process.env.UPDATE_SCREENSHOT
    ? join(here, "..", "..", "docs", `console-${name}.png`)
    : join(process.env.TMPDIR ?? "/tmp", `broker-console-${name}.png`);

/** A JSON request to broker as `token` (if any): status and body. */
async function call(broker, method, path, token, body) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(`${broker.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, body: await res.json().catch(() => null) };
}

async function login(broker, username, password = PASSWORD) {
  const { status, body } = await call(broker, "POST", "/login", null, { username, password });
  assert.equal(status, 200, `login ${username}`);
  return body.jwt;
}

async function signIn(page, broker, username) {
  await page.goto(`${broker.url}/admin`);
  await page.fill("#login-username", username);
  await page.fill("#login-password", PASSWORD);
  await page.click("#login-form button[type=submit]");
}

test("the console: users, rights, live tail, revocation, server charts", async () => {
  const broker = await startBroker(["--admin", `root:${PASSWORD}`]);
  const browser = await launchBrowser();
  try {
    const page = await (await browser.newContext({ viewport: { width: 1280, height: 860 } })).newPage();
    page.on("dialog", (d) => d.accept("a password root chose"));

    // A non-admin is told the console is for admins.
    assert.equal((await call(broker, "POST", "/users", null, { username: "eve", password: PASSWORD })).status, 200);
    await signIn(page, broker, "eve");
    await page.waitForSelector("#denied:not([hidden])");
    assert.match(await page.textContent("#denied"), /Admins only/);
    await page.click("#denied-logout");
    await page.waitForSelector("#signin:not([hidden])");

    // The admin signs in and creates ada.
    await signIn(page, broker, "root");
    await page.waitForSelector("#user-rows tr[data-user=root]");
    await page.fill("#new-username", "ada");
    await page.fill("#new-password", PASSWORD);
    await page.click("#create-form button[type=submit]");
    await page.waitForSelector("#user-rows tr[data-user=ada]");
    const ada = await login(broker, "ada");
    const insert = (channel, data) => call(broker, "POST", "/insert", ada, { event: "note", data, channel });
    assert.equal((await insert("room", { n: 1 })).status, 200);

    // Narrow ada's rights to the channel "public": her next insert into "room" is refused.
    const row = page.locator("#user-rows tr[data-user=ada]");
    await row.locator("input[aria-label='write of ada']").fill("public");
    await row.getByRole("button", { name: "Save" }).click();
    await page.waitForFunction(() => document.querySelector("#users-message").textContent === "Saved ada");
    assert.equal((await insert("room", { n: 2 })).status, 403, "403 after the rights change");
    assert.equal((await insert("public", { n: 3 })).status, 200);

    // The search narrows the list.
    await page.fill("#user-search", "ad");
    await page.waitForFunction(() => document.querySelectorAll("#user-rows tr").length === 1);
    await page.screenshot({ path: shot("users"), fullPage: true });
    await page.fill("#user-search", "");
    await page.waitForSelector("#user-rows tr[data-user=root]");

    // Channels: counts, then an insert appears in the live tail.
    await page.click("nav a[data-page=channels]");
    await page.waitForSelector("#channel-rows tr[data-channel=public]");
    await page.waitForSelector("#tail-status.live");
    assert.equal((await insert("public", { hello: "tail" })).status, 200);
    await page.waitForSelector("#tail li[data-channel=public][data-event=note]");
    assert.match(await page.textContent("#tail li"), /"hello":"tail"/);
    // The filter hides what does not match; pause holds new records back.
    await page.fill("#tail-filter", "nothing like this");
    await page.waitForSelector("#tail li[hidden]", { state: "attached" });
    await page.fill("#tail-filter", "");
    await page.click("#tail-pause");
    assert.equal((await insert("public", { held: true })).status, 200);
    await page.click("#tail-pause");
    await page.waitForFunction(() => document.querySelectorAll("#tail li").length === 2);

    // One channel's latest events and an event's history with a diff.
    await page.click("#channel-rows tr[data-channel=public]");
    await page.waitForSelector("#latest .latest-item");
    await page.click("#latest .event-name a");
    await page.waitForSelector("#diff .add");
    await page.waitForFunction(() => document.querySelector("#channel-rows tr[data-channel=public] td:nth-child(2)")?.textContent === "3");
    await page.screenshot({ path: shot("channels"), fullPage: true });

    // Revoking ada ends her open stream.
    const stream = await fetch(`${broker.url}/events`, { headers: { Authorization: `Bearer ${ada}` } });
    assert.equal(stream.status, 200);
    const reader = stream.body.getReader();
    await reader.read();
    await page.click("nav a[data-page=users]");
    await page.locator("#user-rows tr[data-user=ada]").getByRole("button", { name: "Revoke" }).click();
    await page.waitForSelector("#user-rows tr[data-user=ada] td.revoked");
    for (;;) {
      const { done } = await reader.read();
      if (done) break;
    }
    assert.equal((await call(broker, "GET", "/users/me", ada)).status, 401);
    // Restore, and reset the password (the dialog answers it).
    await page.locator("#user-rows tr[data-user=ada]").getByRole("button", { name: "Restore" }).click();
    await page.waitForSelector("#user-rows tr[data-user=ada] td.active");
    await page.locator("#user-rows tr[data-user=ada]").getByRole("button", { name: "Reset password" }).click();
    await page.waitForFunction(() => document.querySelector("#users-message").textContent === "Password of ada reset");
    const fresh = await login(broker, "ada", "a password root chose");

    // Presence: a client connected through /subscribe shows under its channel.
    const sub = await fetch(`${broker.url}/subscribe?channels=public&clientId=tab-1`, { headers: { Authorization: `Bearer ${fresh}` } });
    assert.equal(sub.status, 200);
    const subReader = sub.body.getReader();
    await subReader.read();
    await page.click("nav a[data-page=presence]");
    await page.click("#presence-refresh");
    await page.waitForFunction(() => document.querySelector("#presence-list").textContent.includes("tab-1"));
    assert.match(await page.textContent("#presence-list"), /public \(1\)/);
    await subReader.cancel();

    // The server page: version, store and charts drawn from /metrics.
    await page.click("nav a[data-page=server]");
    await page.waitForFunction(() => document.querySelector("#server-info").textContent.includes("embedded"));
    // Once the first sample is taken, new inserts show as a rate.
    await page.waitForFunction(() => Number(document.querySelector("#charts").dataset.samples) >= 1);
    for (let i = 0; i < 3; i++) {
      const { status } = await call(broker, "POST", "/insert", fresh, { event: "note", data: { i }, channel: "public" });
      assert.equal(status, 200);
    }
    await page.waitForFunction(() => Number(document.querySelector("#now-inserts")?.textContent) > 0, null, { timeout: 10_000 });
    await page.waitForFunction(() => Number(document.querySelector("#now-latency")?.textContent) > 0);
    await page.screenshot({ path: shot("server"), fullPage: true });
  } finally {
    await browser.close();
    await broker.stop();
  }
});

test("the console asks for the second factor of an admin who has one", async () => {
  const broker = await startBroker(["--admin", `root:${PASSWORD}`]);
  const browser = await launchBrowser();
  try {
    const root = await login(broker, "root");
    const { body } = await call(broker, "POST", "/users/me/totp", root, {});
    const code = (at) => totp(body.secret, at);
    const now = Math.floor(Date.now() / 1000);
    assert.equal((await call(broker, "POST", "/users/me/totp/confirm", root, { code: code(now) })).status, 200);

    const page = await (await browser.newContext()).newPage();
    await signIn(page, broker, "root");
    await page.waitForSelector("#login-code-row:not([hidden])");
    assert.equal(await page.textContent("#login-error"), "two-factor code required");
    await page.fill("#login-code", code(now + 30));
    await page.click("#login-form button[type=submit]");
    await page.waitForSelector("#user-rows tr[data-user=root]");
  } finally {
    await browser.close();
    await broker.stop();
  }
});

/** RFC 6238 (HMAC-SHA-1, 30 s, 6 digits) for a base32 secret at Unix second `at`. */
function totp(secret, at) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const ch of secret.replace(/=+$/, "")) bits += alphabet.indexOf(ch).toString(2).padStart(5, "0");
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(at / 30)));
  const mac = createHmac("sha1", key).update(counter).digest();
  const offset = mac[19] & 0x0f;
  return String((mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).padStart(6, "0");
}
