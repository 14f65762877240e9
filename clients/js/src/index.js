// broker-client: a client for Broker, for browsers and Node (>= 20). No dependencies.
//
// It opens the event stream with fetch, so it can send `Authorization: Bearer`, which
// EventSource cannot. It parses SSE per the WHATWG rules and reconnects by itself with
// backoff and `Last-Event-ID`, so a dropped connection loses nothing. It also keeps the latest
// data of every event: the latest event is the schema.

import { SseParser } from "./sse.js";

export { SseParser } from "./sse.js";

/** An error answered by Broker (`{"error": ...}`) or a failed request. */
export class BrokerError extends Error {
  /**
   * @param {number} status HTTP status (0 when the request did not reach the server)
   * @param {string} message the server's reason
   */
  constructor(status, message) {
    super(message);
    this.name = "BrokerError";
    this.status = status;
  }
}

const DEFAULT_CHANNEL = "default";
const keyOf = (channel, event) => `${channel}\u0000${event}`;

/** A connection to one Broker server. */
export class Broker {
  #fetch;
  #getToken;
  #handlers = new Map();
  #listeners = new Set();
  #latest = new Map();
  #abort = null;
  #wake = null;
  #running = false;
  #closed = false;
  #readyResolve;

  /**
   * @param {object} options
   * @param {string} options.url Broker's base URL, e.g. `http://localhost:8080`
   * @param {string} [options.token] a JWT (from `login`, or your own)
   * @param {() => Promise<string>|string} [options.getToken] called for a fresh token when the
   *   current one is missing, expired or refused; lets a stream outlive its tokens
   * @param {typeof fetch} [options.fetch] the fetch to use (default: the global one)
   * @param {number} [options.initialDelay] first reconnection delay in ms (default: the
   *   server's `retry:`, else 1000)
   * @param {number} [options.maxDelay] longest reconnection delay in ms (default 30000)
   */
  constructor({ url, token, getToken, fetch: fetchImpl, initialDelay, maxDelay = 30_000 }) {
    if (!url) throw new TypeError("Broker: url is required");
    this.url = url.replace(/\/+$/, "");
    this.token = token ?? null;
    this.#getToken = getToken ?? null;
    this.#fetch = fetchImpl ?? globalThis.fetch.bind(globalThis);
    this.initialDelay = initialDelay ?? null;
    this.maxDelay = maxDelay;
    /** Id of the last record received; sent as `Last-Event-ID` on reconnection. */
    this.lastEventId = null;
    /** Whether the stream is open and past its snapshot or replay. */
    this.synced = false;
    /** Resolves at the first `$synced` of the stream. */
    this.ready = new Promise((resolve) => (this.#readyResolve = resolve));
  }

  // ---- requests -------------------------------------------------------------------------

  async #request(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    let res;
    try {
      res = await this.#fetch(`${this.url}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "include",
      });
    } catch (err) {
      throw new BrokerError(0, `request failed: ${err.message}`);
    }
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (!res.ok) throw new BrokerError(res.status, json?.error ?? (text || res.statusText));
    return json;
  }

  /** Creates a user. Resolves to `{username}`. */
  signup(username, password) {
    return this.#request("POST", "/users", { username, password });
  }

  /** Logs in and keeps the token for later requests. Resolves to `{jwt, expires_at}`. */
  async login(username, password) {
    const answer = await this.#request("POST", "/login", { username, password });
    this.token = answer.jwt;
    return answer;
  }

  /** Inserts an event. Resolves to `{id, event, channel, timestamp}` once it is durable. */
  insert(event, data, { channel } = {}) {
    const body = { event, data };
    if (channel !== undefined) body.channel = channel;
    return this.#request("POST", "/insert", body);
  }

  /** Every version of an event: `{"<event>_v_<timestamp>": data, ...}`, oldest first. */
  audit(event, { channel = DEFAULT_CHANNEL } = {}) {
    const q = new URLSearchParams({ channel });
    return this.#request("GET", `/audit/${encodeURIComponent(event)}?${q}`);
  }

  /** A page of versions with ids: `{items: [...], next}`. */
  history(event, { channel = DEFAULT_CHANNEL, after, limit } = {}) {
    const q = new URLSearchParams({ channel });
    if (after !== undefined && after !== null) q.set("after", String(after));
    if (limit !== undefined) q.set("limit", String(limit));
    return this.#request("GET", `/history/${encodeURIComponent(event)}?${q}`);
  }

  // ---- the live model -------------------------------------------------------------------

  /**
   * Calls `handler(data, record)` for every record of `event` (`"*"` for all), snapshot
   * included. Returns a function that removes the handler.
   */
  on(event, handler) {
    if (!this.#handlers.has(event)) this.#handlers.set(event, new Set());
    this.#handlers.get(event).add(handler);
    return () => this.#handlers.get(event)?.delete(handler);
  }

  /**
   * Calls `listener(change)` whenever the latest data of an event changes, where change is
   * `{event, channel, data, id, timestamp}`, or `{reset: true}` when the map was cleared.
   * Returns a function that removes the listener.
   */
  subscribe(listener) {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** The latest data of `event` (in `channel`, default `default`), or undefined. */
  get(event, { channel = DEFAULT_CHANNEL } = {}) {
    return this.#latest.get(keyOf(channel, event))?.data;
  }

  /** The latest record of every event received: `[{event, channel, data, id, timestamp}]`. */
  entries() {
    return [...this.#latest.values()];
  }

  // ---- the stream -----------------------------------------------------------------------

  /**
   * Opens the stream (and keeps it open, reconnecting as needed) until `close()`.
   * @param {object} [options]
   * @param {string[]} [options.channels] channels to follow (default: every readable one)
   */
  connect({ channels } = {}) {
    if (this.#running) return this;
    this.#running = true;
    this.#closed = false;
    this.channels = channels ?? null;
    this.#run();
    return this;
  }

  /** Closes the stream for good. */
  close() {
    this.#closed = true;
    this.#running = false;
    this.synced = false;
    this.#abort?.abort();
    this.#wake?.();
  }

  async #freshToken() {
    if (!this.#getToken) return;
    this.token = await this.#getToken();
  }

  async #run() {
    let attempt = 0;
    let retry = null;
    while (!this.#closed) {
      const controller = new AbortController();
      this.#abort = controller;
      let received = false;
      try {
        if (!this.token) await this.#freshToken();
        const q = new URLSearchParams({ envelope: "true" });
        if (this.channels) q.set("channels", this.channels.join(","));
        const headers = { Accept: "text/event-stream" };
        if (this.token) headers.Authorization = `Bearer ${this.token}`;
        if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
        const res = await this.#fetch(`${this.url}/events?${q}`, {
          headers,
          signal: controller.signal,
          credentials: "include",
          cache: "no-store",
        });
        if (res.status === 401 && this.#getToken) {
          this.token = null;
          throw new BrokerError(401, "token refused");
        }
        if (!res.ok) {
          const body = await res.json().catch(() => ({}));
          throw new BrokerError(res.status, body.error ?? res.statusText);
        }
        this.#emit("open", {});
        const parser = new SseParser();
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          for (const event of parser.push(decoder.decode(value, { stream: true }))) {
            received = true;
            this.#dispatch(event);
          }
          retry = parser.retry ?? retry;
        }
      } catch (err) {
        if (this.#closed) break;
        const status = err instanceof BrokerError ? err.status : 0;
        this.#emit("error", { error: err, status });
        // Refusals that waiting will not fix stop the stream.
        if ((status === 401 && !this.#getToken) || status === 400 || status === 403) {
          this.#running = false;
          break;
        }
      }
      this.synced = false;
      if (this.#closed) break;
      attempt = received ? 0 : attempt + 1;
      const base = this.initialDelay ?? retry ?? 1000;
      const delay = Math.min(this.maxDelay, base * 2 ** Math.min(attempt, 10)) * (0.75 + Math.random() / 2);
      this.#emit("reconnecting", { delay, attempt });
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  #dispatch({ type, data, lastEventId }) {
    switch (type) {
      case "$synced": {
        // Everything up to this id is reflected in the latest map: resume from here.
        const synced = JSON.parse(data);
        this.lastEventId = lastEventId || synced.id;
        this.synced = true;
        this.#emit("synced", synced);
        this.#readyResolve();
        return;
      }
      case "$reset":
        this.#latest.clear();
        this.lastEventId = null;
        for (const listener of this.#listeners) listener({ reset: true });
        this.#emit("reset", JSON.parse(data));
        return;
      case "$error": {
        const reason = JSON.parse(data).error;
        // An expired token: get a fresh one before reconnecting.
        if (reason === "token expired") this.token = null;
        this.#emit("error", { error: new BrokerError(401, reason), status: 401 });
        return;
      }
      default:
        break;
    }
    if (type.startsWith("$")) return;
    const record = JSON.parse(data);
    this.lastEventId = lastEventId || record.id;
    const entry = {
      event: record.event,
      channel: record.channel,
      data: record.data,
      id: record.id,
      timestamp: record.timestamp,
    };
    this.#latest.set(keyOf(record.channel, record.event), entry);
    for (const listener of this.#listeners) listener(entry);
    for (const key of [record.event, "*"]) {
      for (const handler of this.#handlers.get(key) ?? []) handler(record.data, entry);
    }
  }

  #emit(kind, detail) {
    for (const handler of this.#handlers.get(`$${kind}`) ?? []) handler(detail);
  }
}
