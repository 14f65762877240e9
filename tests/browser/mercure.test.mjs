// The Mercure hub in a real browser: a page of Broker's own origin opens a native EventSource
// on /.well-known/mercure?match=... (anonymously, and with the mercureAuthorization cookie for
// private updates) and publishes with a form-encoded fetch POST.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { startBroker, launchBrowser } from "./harness.mjs";

const SECRET = "browser-test-mercure-secret-32b!";

/** An HS256 token of the older form with these claims (an hour of validity). */
function token(mercure) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ mercure, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

// Subscribes, then publishes one private and one public update from the page itself; lists
// what the EventSource received in order, until the public one.
const PAGE = `<!DOCTYPE html><html><body><script>
window.run = async (publisherToken) => {
  const url = new URL("/.well-known/mercure", location.origin);
  url.searchParams.append("match", "https://example.com/books/1");
  url.searchParams.append("match_urlpattern", "https://example.com/public/:id");
  const source = new EventSource(url);
  const received = [];
  const done = new Promise((resolve, reject) => {
    source.onmessage = (e) => {
      received.push({ id: e.lastEventId, data: e.data });
      if (e.data === "public") resolve();
    };
    source.onerror = () => { if (source.readyState === EventSource.CLOSED) reject(new Error("closed")); };
  });
  await new Promise((resolve) => { source.onopen = resolve; });
  const publish = (fields) => fetch("/.well-known/mercure", {
    method: "POST",
    headers: { authorization: "Bearer " + publisherToken },
    body: new URLSearchParams(fields),
  }).then(async (r) => ({ status: r.status, type: r.headers.get("content-type"), id: await r.text() }));
  const secret = await publish([["topic", "https://example.com/books/1"], ["private", "on"], ["data", "secret"]]);
  const pub = await publish([["topic", "https://example.com/public/7"], ["data", "public"]]);
  await done;
  source.close();
  return { secret, pub, received };
};
</script></body></html>`;

let broker, browser;
before(async () => {
  broker = await startBroker(["--mercure-jwt-key", SECRET, "--mercure-anonymous"]);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await broker?.stop();
});

/** A page at Broker's own origin (served by the browser's request interception). */
async function openPage(context) {
  const page = await context.newPage();
  const pageUrl = `${broker.url}/mercure-test.html`;
  await page.route(pageUrl, (route) =>
    route.fulfill({ status: 200, contentType: "text/html", body: PAGE }),
  );
  await page.goto(pageUrl);
  return page;
}

test("an anonymous EventSource gets public updates only, published by a form POST", async () => {
  const context = await browser.newContext();
  const page = await openPage(context);
  const result = await page.evaluate((t) => window.run(t), token({ publish: ["*"] }));
  assert.equal(result.pub.status, 200);
  assert.equal(result.pub.type, "text/plain; charset=utf-8");
  assert.match(result.pub.id, /^urn:uuid:/);
  assert.deepEqual(result.received, [{ id: result.pub.id, data: "public" }]);
  await context.close();
});

test("the mercureAuthorization cookie lets the EventSource receive private updates", async () => {
  const context = await browser.newContext();
  await context.addCookies([
    {
      name: "mercureAuthorization",
      value: token({ subscribe: ["https://example.com/books/{id}"] }),
      url: broker.url,
      httpOnly: true,
    },
  ]);
  const page = await openPage(context);
  const result = await page.evaluate((t) => window.run(t), token({ publish: ["*"] }));
  assert.deepEqual(
    result.received.map((e) => e.data),
    ["secret", "public"],
  );
  assert.equal(result.received[0].id, result.secret.id);
  await context.close();
});
