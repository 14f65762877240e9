import { test } from "node:test";
import assert from "node:assert/strict";
import { SseParser } from "../src/sse.js";

const STREAM =
  "\uFEFFretry: 1500\n: a comment\nid: 1\nevent: user\ndata: {\"a\":1}\n\n" +
  "data: line one\r\ndata: line two\r\n\r\n" +
  "id: 7\revent: x\rdata\r\r" +
  "id: 9\n\n" +
  "event: empty\n\n" +
  "data:  leading space kept after the first\nfoo: ignored\n\n";

const EXPECTED = [
  { type: "user", data: '{"a":1}', lastEventId: "1" },
  { type: "message", data: "line one\nline two", lastEventId: "1" },
  { type: "x", data: "", lastEventId: "7" },
  { type: "message", data: " leading space kept after the first", lastEventId: "9" },
];

test("parses fields, multi-line data, comments, CRLF and CR, id persistence and retry", () => {
  const parser = new SseParser();
  assert.deepEqual(parser.push(STREAM), EXPECTED);
  assert.equal(parser.retry, 1500);
  assert.equal(parser.lastEventId, "9", "an id-only frame moves the last event id");
});

test("gives the same events whatever the chunk boundaries", () => {
  for (let size = 1; size <= 7; size++) {
    const parser = new SseParser();
    const events = [];
    for (let i = 0; i < STREAM.length; i += size) events.push(...parser.push(STREAM.slice(i, i + size)));
    assert.deepEqual(events, EXPECTED, `chunks of ${size}`);
  }
});

test("an id with NUL is ignored and a bad retry is ignored", () => {
  const parser = new SseParser();
  parser.push("id: 3\ndata: a\n\nid: 4\u0000x\nretry: 12a\ndata: b\n\n");
  assert.equal(parser.lastEventId, "3");
  assert.equal(parser.retry, null);
});
