// HTTP API through the official pusher Node library, plus raw signed requests for the error
// statuses the library never produces.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  APP,
  md5Hex,
  nextEmit,
  uniqueName,
  useCrier,
} from "./harness.mjs";

const crier = useCrier();

const UNICODE_TEXT = "Grüße 🚀 日本";

async function json(responsePromise) {
  const response = await responsePromise;
  assert.equal(response.status, 200);
  return response.json();
}

function assertJsonError(response, status) {
  assert.equal(response.status, status, `expected HTTP ${status}, got ${response.status}: ${response.text}`);
  assert.match(response.headers["content-type"] ?? "", /application\/json/);
  assert.equal(typeof response.json, "object", `body must be JSON, got ${response.text}`);
  assert.equal(typeof response.json.error, "string", `body must be {"error": "..."}, got ${response.text}`);
  assert.ok(response.json.error.length > 0);
}

function postEvents(body, options = {}) {
  return crier.server.request({ method: "POST", path: `/apps/${APP.id}/events`, body, ...options });
}

function postBatch(body, options = {}) {
  return crier.server.request({ method: "POST", path: `/apps/${APP.id}/batch_events`, body, ...options });
}

// --- POST /events through the Node library ---

test("trigger keeps Unicode data byte for byte", async () => {
  const channel = uniqueName("unicode-");
  const raw = await crier.server.subscribedRaw(channel);
  const pusherJs = crier.server.pusherJs();
  const subscription = pusherJs.subscribe(channel);
  await nextEmit(subscription, "pusher:subscription_succeeded");
  const received = nextEmit(subscription, "greeting");

  const response = await crier.server.api().trigger(channel, "greeting", { text: UNICODE_TEXT });
  assert.deepEqual(await response.json(), {});

  const frame = await raw.waitForEvent("greeting", { channel });
  assert.deepEqual(frame.json, { event: "greeting", channel, data: JSON.stringify({ text: UNICODE_TEXT }) });
  const [data] = await received;
  assert.deepEqual(data, { text: UNICODE_TEXT });
});

test("trigger to several channels sends one frame per channel", async () => {
  const channels = [uniqueName("multi-a-"), uniqueName("multi-b-"), uniqueName("private-multi-c-")];
  const clientA = await crier.server.subscribedRaw(channels[0]);
  const clientB = await crier.server.subscribedRaw(channels[1]);
  const clientC = await crier.server.connectRaw();
  await clientC.subscribePrivate(channels[2]);
  const both = await crier.server.subscribedRaw(channels[0]);
  await both.subscribe(channels[1]);

  await crier.server.api().trigger(channels, "fan-out", "payload");

  for (const [client, channel] of [[clientA, channels[0]], [clientB, channels[1]], [clientC, channels[2]]]) {
    const frame = await client.waitForEvent("fan-out", { channel });
    assert.deepEqual(frame.json, { event: "fan-out", channel, data: "payload" });
  }
  await both.waitForEvent("fan-out", { channel: channels[0] });
  await both.waitForEvent("fan-out", { channel: channels[1] });
  await both.roundTrip();
  assert.equal(both.events("fan-out").length, 2, "a socket in two of the channels gets one frame for each");
});

test("trigger with socket_id skips that connection only", async () => {
  const channel = uniqueName("exclude-");
  const excluded = await crier.server.subscribedRaw(channel);
  const included = await crier.server.subscribedRaw(channel);
  const api = crier.server.api();

  await api.trigger(channel, "not-for-you", "1", { socket_id: excluded.socketId });
  await api.trigger(channel, "for-everyone", "2");

  await included.waitForEvent("not-for-you", { channel });
  await included.waitForEvent("for-everyone", { channel });
  await excluded.waitForEvent("for-everyone", { channel });
  assert.deepEqual(excluded.events("not-for-you"), []);
});

test("trigger with info returns user_count and subscription_count per channel", async () => {
  const presence = uniqueName("presence-info-");
  const publicChannel = uniqueName("public-info-");
  await crier.server.presenceRaw(presence, { user_id: "one" });
  await crier.server.presenceRaw(presence, { user_id: "one" });
  await crier.server.presenceRaw(presence, { user_id: "two" });
  await crier.server.subscribedRaw(publicChannel);

  const body = await json(
    crier.server.api().trigger([presence, publicChannel], "counted", "{}", { info: "user_count,subscription_count" }),
  );

  assert.deepEqual(body, {
    channels: {
      [presence]: { user_count: 2, subscription_count: 3 },
      [publicChannel]: { subscription_count: 1 },
    },
  });
});

test("trigger to a channel nobody joined returns {}", async () => {
  const body = await json(crier.server.api().trigger(uniqueName("empty-"), "nobody-home", "{}"));

  assert.deepEqual(body, {});
});

// --- POST /events with raw bodies ---

test("POST events with a single channel field delivers the event", async () => {
  const channel = uniqueName("single-field-");
  const client = await crier.server.subscribedRaw(channel);
  const response = await postEvents({ name: "single", data: "x", channel });

  assert.equal(response.status, 200);
  assert.deepEqual(response.json, {});
  const frame = await client.waitForEvent("single", { channel });
  assert.equal(frame.json.data, "x");
});

test("POST events with non-string data forwards its compact JSON text", async () => {
  const channel = uniqueName("object-data-");
  const client = await crier.server.subscribedRaw(channel);
  const response = await postEvents('{"name":"object","data": {"a": 1, "b": [true, null]},"channels":["' + channel + '"]}');

  assert.equal(response.status, 200);
  const frame = await client.waitForEvent("object", { channel });
  assert.equal(frame.json.data, '{"a":1,"b":[true,null]}');
});

test("POST events with data of exactly 10240 bytes is accepted", async () => {
  const channel = uniqueName("limit-");
  const client = await crier.server.subscribedRaw(channel);
  const data = "é".repeat(5120);
  assert.equal(Buffer.byteLength(data), 10_240);
  const response = await postEvents({ name: "at-limit", data, channels: [channel] });

  assert.equal(response.status, 200);
  const frame = await client.waitForEvent("at-limit", { channel });
  assert.equal(frame.json.data, data);
});

for (const [label, data] of [
  ["10241 ASCII bytes", "x".repeat(10_241)],
  ["10242 UTF-8 bytes in 5121 characters", "é".repeat(5121)],
]) {
  test(`POST events with data of ${label} gets 413`, async () => {
    const response = await postEvents({ name: "too-big", data, channels: [uniqueName("limit-")] });

    assertJsonError(response, 413);
  });
}

test("pusher Node library surfaces 413 for oversized data", async () => {
  await assert.rejects(crier.server.api().trigger(uniqueName("limit-"), "too-big", "x".repeat(10_241)), (error) => {
    assert.equal(error.status, 413);
    return true;
  });
});

for (const [label, body] of [
  ["invalid JSON", "{not json"],
  ["a JSON array", "[]"],
  ["no name", { data: "1", channels: ["a"] }],
  ["an empty name", { name: "", data: "1", channels: ["a"] }],
  ["a name of 201 characters", { name: "n".repeat(201), data: "1", channels: ["a"] }],
  ["a pusher: name", { name: "pusher:fake", data: "1", channels: ["a"] }],
  ["a pusher_internal: name", { name: "pusher_internal:member_added", data: "1", channels: ["a"] }],
  ["no data", { name: "e", channels: ["a"] }],
  ["no channel", { name: "e", data: "1" }],
  ["an empty channels list", { name: "e", data: "1", channels: [] }],
  ["101 channels", { name: "e", data: "1", channels: Array.from({ length: 101 }, (_, i) => `c${i}`) }],
  ["an invalid channel name", { name: "e", data: "1", channels: ["bad channel!"] }],
  ["a channel name of 201 characters", { name: "e", data: "1", channels: ["c".repeat(201)] }],
  ["a malformed socket_id", { name: "e", data: "1", channels: ["a"], socket_id: "abc" }],
  ["an encrypted channel among several", { name: "e", data: "1", channels: ["private-encrypted-a", "b"] }],
]) {
  test(`POST events with ${label} gets 400`, async () => {
    const response = await postEvents(body);

    assertJsonError(response, 400);
  });
}

test("POST events with 100 channels is accepted", async () => {
  const response = await postEvents({
    name: "hundred",
    data: "1",
    channels: Array.from({ length: 100 }, (_, i) => `hundred-${i}`),
  });

  assert.equal(response.status, 200);
});

// --- POST /batch_events ---

test("triggerBatch delivers every event in order", async () => {
  const channel = uniqueName("batch-");
  const client = await crier.server.subscribedRaw(channel);
  const body = await json(
    crier.server.api().triggerBatch([
      { channel, name: "first", data: { n: 1 } },
      { channel, name: "second", data: UNICODE_TEXT },
    ]),
  );

  assert.deepEqual(body, {});
  await client.waitForEvent("second", { channel });
  const names = client.messages.filter((message) => message.json?.channel === channel).map((message) => message.json.event);
  assert.deepEqual(names.filter((name) => name !== "pusher_internal:subscription_succeeded"), ["first", "second"]);
  assert.equal(client.events("second")[0].json.data, UNICODE_TEXT);
});

test("triggerBatch with info returns one entry per event", async () => {
  const presence = uniqueName("presence-batch-");
  const publicChannel = uniqueName("public-batch-");
  await crier.server.presenceRaw(presence, { user_id: "a" });
  await crier.server.presenceRaw(presence, { user_id: "a" });
  await crier.server.subscribedRaw(publicChannel);

  const body = await json(
    crier.server.api().triggerBatch([
      { channel: presence, name: "p", data: "1", info: "user_count,subscription_count" },
      { channel: publicChannel, name: "q", data: "2" },
      { channel: publicChannel, name: "r", data: "3", info: "subscription_count" },
    ]),
  );

  assert.deepEqual(body, {
    batch: [{ user_count: 1, subscription_count: 2 }, {}, { subscription_count: 1 }],
  });
});

test("triggerBatch honours socket_id per event", async () => {
  const channel = uniqueName("batch-exclude-");
  const excluded = await crier.server.subscribedRaw(channel);
  const included = await crier.server.subscribedRaw(channel);
  await json(
    crier.server.api().triggerBatch([
      { channel, name: "skip-one", data: "1", socket_id: excluded.socketId },
      { channel, name: "to-all", data: "2" },
    ]),
  );

  await included.waitForEvent("skip-one", { channel });
  await excluded.waitForEvent("to-all", { channel });
  assert.deepEqual(excluded.events("skip-one"), []);
});

test("batch of 10 events is accepted", async () => {
  const batch = Array.from({ length: 10 }, (_, i) => ({ channel: "batch-ten", name: `e${i}`, data: "1" }));
  const response = await postBatch({ batch });

  assert.equal(response.status, 200);
});

for (const [label, body] of [
  ["11 events", { batch: Array.from({ length: 11 }, (_, i) => ({ channel: "c", name: `e${i}`, data: "1" })) }],
  ["an event with channels instead of channel", { batch: [{ channels: ["c"], name: "e", data: "1" }] }],
  ["an event without a name", { batch: [{ channel: "c", name: "ok", data: "1" }, { channel: "c", data: "1" }] }],
  ["an invalid channel name", { batch: [{ channel: "bad channel!", name: "e", data: "1" }] }],
  ["no batch field", { events: [] }],
  ["invalid JSON", "{\"batch\":["],
]) {
  test(`POST batch_events with ${label} gets 400`, async () => {
    const response = await postBatch(body);

    assertJsonError(response, 400);
  });
}

test("invalid batch delivers none of its events", async () => {
  const channel = uniqueName("batch-atomic-");
  const client = await crier.server.subscribedRaw(channel);
  const response = await postBatch({
    batch: [
      { channel, name: "valid-first", data: "1" },
      { channel: "bad channel!", name: "invalid-second", data: "1" },
    ],
  });
  assertJsonError(response, 400);

  await crier.server.api().trigger(channel, "after-batch", "1");
  await client.waitForEvent("after-batch", { channel });
  assert.deepEqual(client.events("valid-first"), []);
});

test("batch with an oversized event gets 413", async () => {
  const response = await postBatch({
    batch: [
      { channel: "c", name: "small", data: "1" },
      { channel: "c", name: "big", data: "x".repeat(10_241) },
    ],
  });

  assertJsonError(response, 413);
});

// --- GET /channels ---

test("GET channels with filter_by_prefix lists only occupied matching channels", async () => {
  const prefix = uniqueName("list-");
  await crier.server.subscribedRaw(`${prefix}-a`);
  await crier.server.subscribedRaw(`${prefix}-b`);
  const left = await crier.server.subscribedRaw(`${prefix}-left`);
  left.send({ event: "pusher:unsubscribe", data: { channel: `${prefix}-left` } });
  await left.roundTrip();
  await crier.server.subscribedRaw(uniqueName("other-"));

  const body = await json(crier.server.api().get({ path: "/channels", params: { filter_by_prefix: prefix } }));

  assert.deepEqual(body, { channels: { [`${prefix}-a`]: {}, [`${prefix}-b`]: {} } });
});

test("GET channels without a filter includes every occupied channel", async () => {
  const channel = uniqueName("unfiltered-");
  await crier.server.subscribedRaw(channel);
  const body = await json(crier.server.api().get({ path: "/channels" }));

  assert.deepEqual(body.channels[channel], {});
  for (const info of Object.values(body.channels)) {
    assert.deepEqual(info, {}, "without info each channel maps to {}");
  }
});

test("GET channels with info=user_count on a presence prefix counts distinct users", async () => {
  const prefix = uniqueName("presence-list-");
  await crier.server.presenceRaw(`${prefix}-a`, { user_id: "x" });
  await crier.server.presenceRaw(`${prefix}-a`, { user_id: "x" });
  await crier.server.presenceRaw(`${prefix}-a`, { user_id: "y" });
  await crier.server.presenceRaw(`${prefix}-b`, { user_id: "z" });

  const body = await json(
    crier.server.api().get({ path: "/channels", params: { filter_by_prefix: prefix, info: "user_count" } }),
  );

  assert.deepEqual(body, { channels: { [`${prefix}-a`]: { user_count: 2 }, [`${prefix}-b`]: { user_count: 1 } } });
});

test("GET channels with info=subscription_count works for any prefix", async () => {
  const prefix = uniqueName("subs-");
  await crier.server.subscribedRaw(`${prefix}-a`);
  await crier.server.subscribedRaw(`${prefix}-a`);

  const body = await json(
    crier.server.api().get({ path: "/channels", params: { filter_by_prefix: prefix, info: "subscription_count" } }),
  );

  assert.deepEqual(body, { channels: { [`${prefix}-a`]: { subscription_count: 2 } } });
});

for (const [label, query] of [
  ["info=user_count without a filter", { info: "user_count" }],
  ["info=user_count on a non-presence prefix", { filter_by_prefix: "private-", info: "user_count" }],
  ["an unknown info attribute", { filter_by_prefix: "presence-", info: "bogus" }],
]) {
  test(`GET channels with ${label} gets 400`, async () => {
    const response = await crier.server.request({ path: `/apps/${APP.id}/channels`, query });

    assertJsonError(response, 400);
  });
}

test("pusher Node library surfaces 400 for user_count on a non-presence prefix", async () => {
  await assert.rejects(
    crier.server.api().get({ path: "/channels", params: { filter_by_prefix: "public-", info: "user_count" } }),
    (error) => {
      assert.equal(error.status, 400);
      return true;
    },
  );
});

// --- GET /channels/NAME ---

test("GET channel with info=user_count,subscription_count on a presence channel", async () => {
  const channel = uniqueName("presence-one-");
  await crier.server.presenceRaw(channel, { user_id: "a" });
  await crier.server.presenceRaw(channel, { user_id: "a" });
  await crier.server.presenceRaw(channel, { user_id: "b" });

  const body = await json(
    crier.server.api().get({ path: `/channels/${channel}`, params: { info: "user_count,subscription_count" } }),
  );

  assert.deepEqual(body, { occupied: true, user_count: 2, subscription_count: 3 });
});

test("GET channel without info returns only occupied", async () => {
  const channel = uniqueName("occupied-");
  await crier.server.subscribedRaw(channel);

  assert.deepEqual(await json(crier.server.api().get({ path: `/channels/${channel}` })), { occupied: true });
});

test("GET channel on a never-used channel returns occupied false and zero counts", async () => {
  const presence = uniqueName("presence-never-");
  const publicChannel = uniqueName("never-");
  const api = crier.server.api();

  assert.deepEqual(await json(api.get({ path: `/channels/${publicChannel}` })), { occupied: false });
  assert.deepEqual(
    await json(api.get({ path: `/channels/${publicChannel}`, params: { info: "subscription_count" } })),
    { occupied: false, subscription_count: 0 },
  );
  assert.deepEqual(
    await json(api.get({ path: `/channels/${presence}`, params: { info: "user_count,subscription_count" } })),
    { occupied: false, user_count: 0, subscription_count: 0 },
  );
});

test("GET channel with user_count on a non-presence channel gets 400", async () => {
  const response = await crier.server.request({
    path: `/apps/${APP.id}/channels/${uniqueName("public-")}`,
    query: { info: "user_count" },
  });

  assertJsonError(response, 400);
});

test("GET channel with an invalid channel name gets 400", async () => {
  const response = await crier.server.request({ path: `/apps/${APP.id}/channels/bad%20channel!` });

  assertJsonError(response, 400);
});

test("GET channel accepts a percent-encoded info value, as PHP's Guzzle sends it", async () => {
  const channel = uniqueName("presence-encoded-");
  await crier.server.presenceRaw(channel, { user_id: "enc" });
  const response = await crier.server.request({
    path: `/apps/${APP.id}/channels/${channel}`,
    query: { info: "user_count,subscription_count" },
    percentEncode: true,
  });

  assert.equal(response.status, 200, response.text);
  assert.deepEqual(response.json, { occupied: true, user_count: 1, subscription_count: 1 });
});

// --- GET /channels/NAME/users ---

test("GET users lists distinct presence members with string ids", async () => {
  const channel = uniqueName("presence-users-");
  await crier.server.presenceRaw(channel, { user_id: "u-1001", user_info: { name: "Ada" } });
  await crier.server.presenceRaw(channel, { user_id: "u-1001", user_info: { name: "Ada" } });
  await crier.server.presenceRaw(channel, '{"user_id":2002}');

  const body = await json(crier.server.api().get({ path: `/channels/${channel}/users` }));

  assert.deepEqual(
    body.users.sort((a, b) => a.id.localeCompare(b.id)),
    [{ id: "2002" }, { id: "u-1001" }],
  );
});

test("GET users on an unoccupied presence channel returns an empty list", async () => {
  const body = await json(crier.server.api().get({ path: `/channels/${uniqueName("presence-empty-")}/users` }));

  assert.deepEqual(body, { users: [] });
});

test("GET users on a non-presence channel gets 400", async () => {
  const channel = uniqueName("private-users-");
  const response = await crier.server.request({ path: `/apps/${APP.id}/channels/${channel}/users` });

  assertJsonError(response, 400);
});

// --- Signing, authentication and routing errors ---

test("GET with body_md5 of the empty body, as pusher-http-python sends it, is accepted", async () => {
  const response = await crier.server.request({
    path: `/apps/${APP.id}/channels`,
    bodyMd5: md5Hex(Buffer.alloc(0)),
  });

  assert.equal(response.status, 200, response.text);
});

test("timestamp 590 s old is accepted", async () => {
  const response = await crier.server.request({
    path: `/apps/${APP.id}/channels`,
    timestamp: Math.floor(Date.now() / 1000) - 590,
  });

  assert.equal(response.status, 200, response.text);
});

for (const [label, makeOptions] of [
  ["a wrong signature", () => ({ signature: "0".repeat(64) })],
  ["a signature made with another secret", () => ({ secret: "not-the-secret" })],
  ["another app's auth_key", () => ({ key: "other-key" })],
  ["auth_version 2.0", () => ({ authVersion: "2.0" })],
  ["a timestamp 600 s old", (now) => ({ timestamp: now - 600 })],
  ["a timestamp one hour old", (now) => ({ timestamp: now - 3600 })],
  ["a timestamp 700 s in the future", (now) => ({ timestamp: now + 700 })],
]) {
  test(`GET channels with ${label} gets 401`, async () => {
    const options = makeOptions(Math.floor(Date.now() / 1000));
    const response = await crier.server.request({ path: `/apps/${APP.id}/channels`, ...options });

    assertJsonError(response, 401);
  });
}

test("pusher Node library with the wrong secret gets 401", async () => {
  await assert.rejects(crier.server.api({ secret: "wrong" }).trigger("c", "e", "1"), (error) => {
    assert.equal(error.status, 401);
    return true;
  });
});

test("POST with a body_md5 that does not match the body gets 401", async () => {
  const response = await postEvents({ name: "e", data: "1", channels: ["a"] }, { bodyMd5: md5Hex("other body") });

  assertJsonError(response, 401);
});

test("POST with a body but no body_md5 gets 401", async () => {
  const response = await postEvents({ name: "e", data: "1", channels: ["a"] }, { omitBodyMd5: true });

  assertJsonError(response, 401);
});

test("request without any auth parameters gets 401", async () => {
  const response = await crier.server.rawHttp(`/apps/${APP.id}/channels`);

  assertJsonError(response, 401);
});

test("unknown app id gets 404", async () => {
  const response = await crier.server.request({ path: "/apps/9999/channels" });

  assertJsonError(response, 404);
});

test("pusher Node library with an unknown app id gets 404", async () => {
  await assert.rejects(crier.server.api({ appId: "9999" }).trigger("c", "e", "1"), (error) => {
    assert.equal(error.status, 404);
    return true;
  });
});

for (const [method, path] of [
  ["GET", `/apps/${APP.id}/nope`],
  ["POST", `/apps/${APP.id}/channels/x/y/z`],
  ["GET", "/not-an-api-path"],
]) {
  test(`${method} ${path} gets 404`, async () => {
    const response = await crier.server.request({ method, path, body: method === "POST" ? "{}" : undefined });

    assertJsonError(response, 404);
  });
}
