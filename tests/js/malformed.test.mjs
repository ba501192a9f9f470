// Malformed and unexpected input on the WebSocket, sent through a raw `ws` client.

import assert from "node:assert/strict";
import { test } from "node:test";

import { useCrier } from "./harness.mjs";

const crier = useCrier();

const FRAME_LIMIT_BYTES = 65_536;

/** Returns a pusher:ping frame padded with an ignored top-level field to exactly `size` bytes. */
function paddedPing(size) {
  const empty = '{"event":"pusher:ping","data":{},"pad":""}';
  const frame = `{"event":"pusher:ping","data":{},"pad":"${"x".repeat(size - empty.length)}"}`;
  assert.equal(Buffer.byteLength(frame), size);
  return frame;
}

for (const [label, text] of [
  ["text that is not JSON", "{this is not json"],
  ["a JSON array", '["pusher:ping"]'],
  ["a JSON string", '"pusher:ping"'],
  ["an object without event", '{"data":{}}'],
  ["an object with a numeric event", '{"event":42,"data":{}}'],
]) {
  test(`${label} gets pusher:error "Invalid JSON" and the connection stays open`, async () => {
    const client = await crier.server.connectRaw();
    const since = client.mark();
    client.send(text);
    const error = await client.waitForEvent("pusher:error", { since });

    assert.deepEqual(error.json, { event: "pusher:error", data: { code: null, message: "Invalid JSON" } });
    await client.roundTrip();
    assert.equal(client.closeEvent, null);
  });
}

test("unknown event name gets pusher:error naming the event", async () => {
  const client = await crier.server.connectRaw();
  const since = client.mark();
  client.send('{"event":"my-event","channel":"orders","data":{}}');
  const error = await client.waitForEvent("pusher:error", { since });

  assert.deepEqual(error.json, {
    event: "pusher:error",
    data: { code: null, message: "Unsupported event received on socket: my-event" },
  });
  await client.roundTrip();
});

test("unknown pusher: and pusher_internal: events are ignored", async () => {
  const client = await crier.server.connectRaw();
  const since = client.mark();
  client.send('{"event":"pusher:future_feature","data":{}}');
  client.send('{"event":"pusher_internal:something","data":"{}"}');
  await client.roundTrip();

  assert.deepEqual(
    client.messages.slice(since).map((message) => message.json.event),
    ["pusher:pong"],
  );
});

test("frame with unknown top-level fields and whitespace is handled normally", async () => {
  const client = await crier.server.connectRaw();
  const since = client.mark();
  client.send(' { "extra" : [1, 2] ,\n "event" : "pusher:ping" , "data" : { } } ');
  const pong = await client.waitForEvent("pusher:pong", { since });

  assert.deepEqual(pong.json, { event: "pusher:pong", data: {} });
});

test(`text frame of exactly ${FRAME_LIMIT_BYTES} bytes is accepted`, async () => {
  const client = await crier.server.connectRaw();
  const since = client.mark();
  client.send(paddedPing(FRAME_LIMIT_BYTES));
  await client.waitForEvent("pusher:pong", { since });

  assert.equal(client.closeEvent, null);
});

test(`text frame above ${FRAME_LIMIT_BYTES} bytes is closed with 1009`, async () => {
  const client = await crier.server.connectRaw();
  client.send(paddedPing(FRAME_LIMIT_BYTES + 1));
  const closed = await client.waitForClose();

  assert.equal(closed.code, 1009);
});

test("binary frame gets pusher:error with code null and the connection stays", async () => {
  const client = await crier.server.connectRaw();
  const since = client.mark();
  client.ws.send(Buffer.from('{"event":"pusher:ping","data":{}}'), { binary: true });
  const error = await client.waitForEvent("pusher:error", { since });

  assert.equal(error.json.data.code, null);
  assert.equal(typeof error.json.data.message, "string");
  assert.deepEqual(client.events("pusher:pong", since), [], "a binary frame must not be handled as an event");
  await client.roundTrip();
  assert.equal(client.closeEvent, null);
});

test("subscribe with non-object data gets pusher:error", async () => {
  const client = await crier.server.connectRaw();
  for (const data of ['"orders"', "42", "null", '"not json"']) {
    const since = client.mark();
    client.send(`{"event":"pusher:subscribe","data":${data}}`);
    await client.waitForEvent("pusher:error", { since });
    await client.roundTrip();
  }
  assert.deepEqual(client.events("pusher_internal:subscription_succeeded"), []);
});

test("pusher:subscribe without a channel gets an error and the connection stays", async () => {
  const client = await crier.server.connectRaw();
  const since = client.mark();
  client.send('{"event":"pusher:subscribe","data":{"auth":""}}');
  const error = await client.waitForEvent("pusher:error", { since });

  assert.equal(error.json.data.code, null);
  await client.roundTrip();
});

test("many errors in a row do not close the connection", async () => {
  const client = await crier.server.connectRaw();
  const since = client.mark();
  for (let i = 0; i < 50; i += 1) {
    client.send("not json");
  }
  await client.roundTrip();

  assert.equal(client.events("pusher:error", since).length, 50);
  assert.equal(client.closeEvent, null);
});
