// Connection handshake, protocol versions, app keys, pings and the listener modes.

import assert from "node:assert/strict";
import { after, test } from "node:test";

import {
  APP,
  SOCKET_ID_PATTERN,
  decodeData,
  startCrier,
  useCrier,
  waitForPusherState,
} from "./harness.mjs";

const crier = useCrier();

test("connection_established is the first frame, with data as a JSON string", async () => {
  const client = await crier.server.openRaw();
  const first = await client.waitForMessage(() => true, { description: "first frame" });

  assert.equal(first.json.event, "pusher:connection_established");
  assert.equal(typeof first.json.data, "string", "data must be a string holding JSON");
  assert.equal(first.json.channel, undefined);
  const data = decodeData(first);
  assert.match(data.socket_id, SOCKET_ID_PATTERN);
  assert.equal(data.activity_timeout, 120, "default activity_timeout is 120 s");
});

test("socket_id parts are integers below 2^53 and unique per connection", async () => {
  const clients = [];
  for (let i = 0; i < 5; i += 1) {
    clients.push(await crier.server.connectRaw());
  }
  const ids = clients.map((client) => client.socketId);

  assert.equal(new Set(ids).size, ids.length, `duplicate socket ids: ${ids.join(", ")}`);
  for (const id of ids) {
    assert.match(id, SOCKET_ID_PATTERN);
    for (const part of id.split(".")) {
      assert.ok(BigInt(part) < 2n ** 53n, `socket id part ${part} does not fit a JavaScript number`);
    }
  }
});

test("pusher-js connects and reports a socket_id", async () => {
  const client = crier.server.pusherJs();
  await waitForPusherState(client, "connected");

  assert.match(client.connection.socket_id, SOCKET_ID_PATTERN);
});

test("pusher:ping with data object gets pusher:pong", async () => {
  const client = await crier.server.connectRaw();
  const since = client.mark();
  client.send('{"event":"pusher:ping","data":{}}');
  const pong = await client.waitForEvent("pusher:pong", { since });

  assert.deepEqual(pong.json, { event: "pusher:pong", data: {} });
});

test("pusher:ping without data, as the Java client sends it, gets pusher:pong", async () => {
  const client = await crier.server.connectRaw();
  const since = client.mark();
  client.send('{"event": "pusher:ping"}');
  const pong = await client.waitForEvent("pusher:pong", { since });

  assert.deepEqual(pong.json, { event: "pusher:pong", data: {} });
});

test("pusher:pong from the client is accepted silently", async () => {
  const client = await crier.server.connectRaw();
  const since = client.mark();
  client.send('{"event":"pusher:pong","data":{}}');
  await client.roundTrip();

  assert.deepEqual(client.events("pusher:error", since), []);
});

test("missing protocol parameter is treated as version 7", async () => {
  const client = await crier.server.connectRaw({ query: "client=js&version=8.4.2" });

  assert.match(client.socketId, SOCKET_ID_PATTERN);
});

test("protocol 4, 5 and 6 are accepted", async () => {
  for (const version of [4, 5, 6]) {
    const client = await crier.server.connectRaw({ query: `protocol=${version}&client=java-client&version=2.4.2` });
    assert.match(client.socketId, SOCKET_ID_PATTERN, `protocol=${version}`);
  }
});

test("unknown query parameters are ignored", async () => {
  const client = await crier.server.connectRaw({ query: "protocol=7&client=js&version=8.4.2&flash=false&x-extra=1" });

  assert.match(client.socketId, SOCKET_ID_PATTERN);
});

for (const [query, code] of [
  ["protocol=3&client=js&version=8.4.2", 4007],
  ["protocol=8&client=js&version=8.4.2", 4007],
  ["protocol=abc&client=js&version=8.4.2", 4006],
  ["protocol=7.0&client=js&version=8.4.2", 4006],
]) {
  test(`${query.split("&")[0]} is rejected with error and close ${code}`, async () => {
    const client = await crier.server.openRaw({ query });
    const error = await client.waitForEvent("pusher:error");
    const closed = await client.waitForClose();

    assert.equal(error.json.data.code, code);
    assert.equal(typeof error.json.data.message, "string");
    assert.equal(closed.code, code);
    assert.deepEqual(client.events("pusher:connection_established"), []);
  });
}

test("unknown app key gets pusher:error 4001 then close 4001", async () => {
  const client = await crier.server.openRaw({ key: "no-such-key" });
  const error = await client.waitForEvent("pusher:error");
  const closed = await client.waitForClose();

  assert.equal(client.messages[0].json.event, "pusher:error", "the error must be the first frame");
  assert.equal(error.json.data.code, 4001);
  assert.equal(typeof error.json.data.message, "string");
  assert.equal(closed.code, 4001);
});

test("pusher-js with an unknown app key ends disconnected", async () => {
  const client = crier.server.pusherJs({ key: "no-such-key" });
  const errors = [];
  client.connection.bind("error", (error) => errors.push(error));
  await waitForPusherState(client, "disconnected", 10_000);

  assert.ok(
    // pusher-js wraps a handshake refusal as {type: "WebSocketError", error: {type: "PusherError", data}}.
    errors.some((error) => error?.error?.data?.code === 4001),
    `expected a 4001 error, got ${JSON.stringify(errors)}`,
  );
});

test("WebSocket upgrade on another path is refused with HTTP 404", async () => {
  await assert.rejects(crier.server.openRaw({ pathPrefix: "/not-a-prefix" }), /HTTP 404/);
});

test("offered pusher-channels-protocol-7 subprotocol is selected", async () => {
  const client = await crier.server.connectRaw({ protocols: ["pusher-channels-protocol-7"] });

  assert.equal(client.ws.protocol, "pusher-channels-protocol-7");
});

test("separate listeners report different ports", () => {
  assert.notEqual(crier.server.wsPort, crier.server.apiPort);
});

test("single listener serves WebSocket and HTTP API on one port", async () => {
  const single = await startCrier({ singleListener: true });
  after(() => single.stop());

  assert.equal(single.wsPort, single.apiPort);
  const client = await single.subscribedRaw("single-listener");
  await single.api().trigger("single-listener", "hello", "{\"on\":\"one port\"}");
  const event = await client.waitForEvent("hello", { channel: "single-listener" });
  assert.equal(event.json.data, '{"on":"one port"}');

  const response = await single.request({ path: `/apps/${APP.id}/channels`, query: {} });
  assert.equal(response.status, 200);
  assert.deepEqual(response.json, { channels: { "single-listener": {} } });
});
