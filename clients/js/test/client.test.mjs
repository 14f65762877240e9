import { test } from "node:test";
import assert from "node:assert/strict";
import { Broker, BrokerError } from "../src/index.js";
import { startBroker } from "../../../tests/support/broker.mjs";

const PASSWORD = "correct horse battery";

/** Resolves when `predicate()` holds, checking after every change the client reports. */
function until(client, predicate, what) {
  return new Promise((resolve, reject) => {
    if (predicate()) return resolve();
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), 15_000);
    const off = client.on("*", () => {
      if (predicate()) {
        clearTimeout(timer);
        off();
        resolve();
      }
    });
  });
}

test("signup, login, insert, audit and history helpers", async () => {
  const server = await startBroker();
  try {
    const client = new Broker({ url: server.url });
    assert.deepEqual(await client.signup("ada", PASSWORD), { username: "ada" });
    const login = await client.login("ada", PASSWORD);
    assert.equal(client.token, login.jwt);
    const first = await client.insert("user", { name: "Ada" });
    await client.insert("user", { name: "Grace" }, { channel: "room1" });
    const second = await client.insert("user", { name: "Linus" });
    assert.equal(Number(second.id), Number(first.id) + 2);
    const audit = await client.audit("user");
    assert.deepEqual(Object.values(audit), [{ name: "Ada" }, { name: "Linus" }]);
    assert.deepEqual(Object.keys(audit), [`user_v_${first.timestamp}`, `user_v_${second.timestamp}`]);
    const page = await client.history("user", { channel: "room1" });
    assert.equal(page.items[0].user, "ada");
    assert.equal(page.next, null);
    await assert.rejects(client.insert("$bad", 1), (err) => err instanceof BrokerError && err.status === 400);
    await assert.rejects(new Broker({ url: server.url }).insert("x", 1), (err) => err.status === 401);
    await assert.rejects(client.login("ada", "wrong password"), (err) => err.status === 401);
  } finally {
    await server.stop();
  }
});

test("the stream fills the latest map with the snapshot, then live records", async () => {
  const server = await startBroker();
  try {
    const writer = new Broker({ url: server.url });
    await writer.signup("ada", PASSWORD);
    await writer.login("ada", PASSWORD);
    await writer.insert("user", { name: "Ada" });
    await writer.insert("user", { name: "Grace" });
    await writer.insert("title", "Hello", { channel: "room1" });

    const client = new Broker({ url: server.url, token: writer.token });
    const changes = [];
    client.subscribe((change) => changes.push(change));
    const seen = [];
    client.on("user", (data, record) => seen.push([data.name, record.channel]));
    client.connect();
    await client.ready;
    assert.deepEqual(client.get("user"), { name: "Grace" }, "only the latest version");
    assert.equal(client.get("title", { channel: "room1" }), "Hello");
    assert.deepEqual(seen, [["Grace", "default"]]);

    await writer.insert("user", { name: "Linus" });
    await until(client, () => client.get("user")?.name === "Linus", "the live record");
    assert.deepEqual(seen.map(([name]) => name), ["Grace", "Linus"]);
    assert.equal(changes.length, 3);
    assert.equal(client.entries().length, 2);
    client.close();
  } finally {
    await server.stop();
  }
});

test("a restarted server loses the client nothing: it resumes with Last-Event-ID", async () => {
  let server = await startBroker(["--no-auth"]);
  const { port, db } = server;
  const writer = new Broker({ url: server.url });
  const client = new Broker({ url: server.url, initialDelay: 200, maxDelay: 1000 });
  const received = [];
  client.on("counter", (data) => received.push(data));
  client.connect();
  await client.ready;
  for (let n = 0; n < 5; n++) await writer.insert("counter", n);
  await until(client, () => received.length === 5, "the first five");

  await server.kill();
  const reconnecting = new Promise((resolve) => {
    const off = client.on("$reconnecting", () => {
      off();
      resolve();
    });
  });
  await reconnecting;
  server = await startBroker(["--no-auth"], { db, port });
  try {
    // Written right after the restart, while the client is still waiting to reconnect.
    for (let n = 5; n < 40; n++) await writer.insert("counter", n);
    await until(client, () => received.length >= 40, "all forty");
    assert.deepEqual(received, Array.from({ length: 40 }, (_, n) => n), "each once, in order");
    assert.equal(client.get("counter"), 39);
    client.close();
  } finally {
    await server.stop();
  }
});

test("with getToken the stream outlives an expired token", async () => {
  const server = await startBroker(["--jwt-expiry", "1"]);
  try {
    const auth = new Broker({ url: server.url });
    await auth.signup("ada", PASSWORD);
    let logins = 0;
    const getToken = async () => {
      logins++;
      return (await auth.login("ada", PASSWORD)).jwt;
    };
    const client = new Broker({ url: server.url, getToken, initialDelay: 100 });
    const values = [];
    client.on("tick", (data) => values.push(data));
    client.connect();
    await client.ready;
    const expired = new Promise((resolve) => {
      const off = client.on("$error", ({ status }) => {
        if (status === 401) {
          off();
          resolve();
        }
      });
    });
    await expired;
    // Written after the first token expired; the client logs in again and catches up.
    const writer = new Broker({ url: server.url, token: await getToken() });
    for (let n = 0; n < 3; n++) await writer.insert("tick", n);
    await until(client, () => values.length >= 3, "the ticks");
    assert.deepEqual(values, [0, 1, 2]);
    assert.ok(logins >= 3, "the client fetched a fresh token");
    client.close();
  } finally {
    await server.stop();
  }
});
