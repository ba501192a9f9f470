// Subscribing and unsubscribing: public, private and presence channels through pusher-js with
// real signatures, and every rejection path through raw frames.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  APP,
  barrier,
  channelAuth,
  decodeData,
  hmacHex,
  nextEmit,
  uniqueName,
  useCrier,
  waitFor,
  waitForPusherState,
} from "./harness.mjs";

const crier = useCrier();

/** Waits for the pusher:error and then the pusher:subscription_error a rejected subscribe produces. */
async function expectRejection(client, since, channel) {
  const error = await client.waitForEvent("pusher:error", { since });
  const subscriptionError = await client.waitForEvent("pusher:subscription_error", { since });
  const errorIndex = client.messages.indexOf(error);
  const subscriptionErrorIndex = client.messages.indexOf(subscriptionError);
  assert.ok(errorIndex < subscriptionErrorIndex, "pusher:error must come before pusher:subscription_error");
  assert.equal(error.json.data.code, null);
  assert.equal(typeof error.json.data.message, "string");
  assert.equal(error.json.channel, undefined, "pusher:error carries no channel field");
  assert.equal(subscriptionError.json.channel, channel);
  assert.equal(typeof subscriptionError.json.data, "object", "subscription_error data is an object");
  assert.equal(typeof subscriptionError.json.data.error, "string");
  assert.deepEqual(client.events("pusher_internal:subscription_succeeded", since), []);
  return subscriptionError.json.data;
}

test("pusher-js subscribes to a public channel", async () => {
  const client = crier.server.pusherJs();
  const channel = client.subscribe(uniqueName("public-"));
  await nextEmit(channel, "pusher:subscription_succeeded");

  assert.equal(channel.subscribed, true);
});

test("public subscription_succeeded frame has data \"{}\"", async () => {
  const client = await crier.server.connectRaw();
  const channel = uniqueName("orders-");
  const succeeded = await client.subscribe(channel);

  assert.deepEqual(succeeded.json, {
    event: "pusher_internal:subscription_succeeded",
    channel,
    data: "{}",
  });
});

test("public subscribe without auth field is accepted", async () => {
  const client = await crier.server.connectRaw();
  const channel = uniqueName("java-style-");
  const since = client.mark();
  client.send({ event: "pusher:subscribe", data: { channel } });

  await client.waitForEvent("pusher_internal:subscription_succeeded", { since, channel });
});

test("pusher-js subscribes to a private channel signed by authorizeChannel", async () => {
  const client = crier.server.pusherJs();
  const channel = client.subscribe(uniqueName("private-"));
  await nextEmit(channel, "pusher:subscription_succeeded");

  assert.equal(channel.subscribed, true);
});

test("private subscribe signed with channel_data is accepted", async () => {
  const client = await crier.server.connectRaw();
  const channel = uniqueName("private-with-data-");
  const { auth, channel_data: channelData } = crier.server
    .api()
    .authorizeChannel(client.socketId, channel, { user_id: "u-1", user_info: { note: "signed" } });
  const succeeded = await client.subscribe(channel, { auth, channelData });

  assert.equal(succeeded.json.data, "{}");
});

test("pusher-js subscribes to a presence channel and sees itself as a member", async () => {
  const client = crier.server.pusherJs({ presenceData: { user_id: "u-ada", user_info: { name: "Ada" } } });
  const channel = client.subscribe(uniqueName("presence-"));
  const [members] = await nextEmit(channel, "pusher:subscription_succeeded");

  assert.equal(members.count, 1);
  assert.equal(members.me.id, "u-ada");
  assert.deepEqual(members.me.info, { name: "Ada" });
});

test("pusher-js duplicate channel bindings share one subscription", async () => {
  const client = crier.server.pusherJs();
  await waitForPusherState(client, "connected");
  const name = uniqueName("public-");
  const first = client.subscribe(name);
  const second = client.subscribe(name);

  assert.equal(first, second);
  await nextEmit(first, "pusher:subscription_succeeded");
});

test("bad signature gets pusher:error and AuthError 401, connection stays usable", async () => {
  const client = await crier.server.connectRaw();
  const channel = uniqueName("private-");
  const since = client.mark();
  client.sendSubscribe(channel, { auth: `${APP.key}:${"b".repeat(64)}` });
  const data = await expectRejection(client, since, channel);

  assert.equal(data.type, "AuthError");
  assert.equal(data.status, 401);
  await client.roundTrip();
  const publicChannel = uniqueName("after-error-");
  await client.subscribe(publicChannel);
  await crier.server.api().trigger(publicChannel, "still-usable", "1");
  await client.waitForEvent("still-usable", { channel: publicChannel });
});

test("pusher-js emits subscription_error with status 401 for a bad signature", async () => {
  const client = crier.server.pusherJs({
    authorize: ({ socketId, channelName }) => ({ auth: `${APP.key}:${hmacHex("wrong-secret", `${socketId}:${channelName}`)}` }),
  });
  const channel = client.subscribe(uniqueName("private-"));
  const [error] = await nextEmit(channel, "pusher:subscription_error");

  assert.equal(error.type, "AuthError");
  assert.equal(error.status, 401);
  assert.equal(client.connection.state, "connected");
});

test("auth signed for another socket_id is rejected with AuthError 401", async () => {
  const client = await crier.server.connectRaw();
  const channel = uniqueName("private-");
  const since = client.mark();
  client.sendSubscribe(channel, { auth: channelAuth("1234.5678", channel) });
  const data = await expectRejection(client, since, channel);

  assert.equal(data.type, "AuthError");
  assert.equal(data.status, 401);
});

test("auth with another app key before the colon is rejected with AuthError 401", async () => {
  const client = await crier.server.connectRaw();
  const channel = uniqueName("private-");
  const since = client.mark();
  const signature = hmacHex(APP.secret, `${client.socketId}:${channel}`);
  client.sendSubscribe(channel, { auth: `other-key:${signature}` });
  const data = await expectRejection(client, since, channel);

  assert.equal(data.type, "AuthError");
  assert.equal(data.status, 401);
});

test("upper-case hex signature is rejected with AuthError 401", async () => {
  const client = await crier.server.connectRaw();
  const channel = uniqueName("private-");
  const since = client.mark();
  const signature = hmacHex(APP.secret, `${client.socketId}:${channel}`).toUpperCase();
  client.sendSubscribe(channel, { auth: `${APP.key}:${signature}` });
  const data = await expectRejection(client, since, channel);

  assert.equal(data.type, "AuthError");
});

for (const [label, auth] of [
  ["missing", undefined],
  ["empty", ""],
]) {
  test(`private subscribe with ${label} auth is rejected with AuthError 401`, async () => {
    const client = await crier.server.connectRaw();
    const channel = uniqueName("private-");
    const since = client.mark();
    const data = { channel };
    if (auth !== undefined) {
      data.auth = auth;
    }
    client.send({ event: "pusher:subscribe", data });
    const errorData = await expectRejection(client, since, channel);

    assert.equal(errorData.type, "AuthError");
    assert.equal(errorData.status, 401);
  });
}

test("private signature that ignores the sent channel_data is rejected", async () => {
  const client = await crier.server.connectRaw();
  const channel = uniqueName("private-");
  const since = client.mark();
  client.sendSubscribe(channel, { auth: channelAuth(client.socketId, channel), channelData: "" });
  const data = await expectRejection(client, since, channel);

  assert.equal(data.type, "AuthError");
});

test("private signature over an empty channel_data is accepted", async () => {
  const client = await crier.server.connectRaw();
  const channel = uniqueName("private-");
  const succeeded = await client.subscribe(channel, { auth: channelAuth(client.socketId, channel, ""), channelData: "" });

  assert.equal(succeeded.json.data, "{}");
});

test("encrypted channel authorizes like a private channel", async () => {
  const client = await crier.server.connectRaw();
  const channel = uniqueName("private-encrypted-");
  const succeeded = await client.subscribePrivate(channel);

  assert.equal(succeeded.json.data, "{}");
});

for (const [label, channel] of [
  ["space and exclamation mark", "bad channel!"],
  ["201 characters", "a".repeat(201)],
  ["empty name", ""],
  ["non-ASCII letter", "grüße"],
  ["colon", "orders:eu"],
]) {
  test(`channel name with ${label} is rejected with InvalidChannel 400`, async () => {
    const client = await crier.server.connectRaw();
    const since = client.mark();
    client.sendSubscribe(channel);
    const data = await expectRejection(client, since, channel);

    assert.equal(data.type, "InvalidChannel");
    assert.equal(data.status, 400);
    await client.roundTrip();
  });
}

test("channel name of 200 characters with every allowed symbol is accepted", async () => {
  const client = await crier.server.connectRaw();
  const base = "Az09_-=@,.;";
  const channel = base + "x".repeat(200 - base.length);
  const succeeded = await client.subscribe(channel);

  assert.equal(succeeded.json.channel, channel);
});

test("private channel name of 201 characters is rejected as InvalidChannel, not AuthError", async () => {
  const client = await crier.server.connectRaw();
  const channel = `private-${"p".repeat(193)}`;
  const since = client.mark();
  client.sendSubscribe(channel, { auth: channelAuth(client.socketId, channel) });
  const data = await expectRejection(client, since, channel);

  assert.equal(data.type, "InvalidChannel");
  assert.equal(data.status, 400);
});

test("subscribe data sent as a string holding JSON is accepted", async () => {
  const client = await crier.server.connectRaw();
  const channel = uniqueName("string-data-");
  const since = client.mark();
  client.send({ event: "pusher:subscribe", data: JSON.stringify({ auth: "", channel }) });

  await client.waitForEvent("pusher_internal:subscription_succeeded", { since, channel });
});

test("duplicate subscribe is acknowledged again and keeps one membership", async () => {
  const channel = uniqueName("presence-dup-");
  const observer = await crier.server.presenceRaw(channel, { user_id: "observer" });
  const client = await crier.server.presenceRaw(channel, { user_id: "twice" });
  const observerSince = observer.mark();
  const again = await client.subscribePresence(channel, { user_id: "twice" });

  const presence = decodeData(again).presence;
  assert.equal(presence.count, 2);
  assert.deepEqual([...presence.ids].sort(), ["observer", "twice"]);
  const [observerBarrier] = await barrier(crier.server, channel, [observer]);
  const addedAfter = observer.messages
    .slice(observerSince, observerBarrier)
    .filter((message) => message.json?.event === "pusher_internal:member_added");
  assert.deepEqual(addedAfter, [], "a repeated subscribe must not announce the member again");

  const info = await crier.server.api().get({ path: `/channels/${channel}`, params: { info: "subscription_count,user_count" } });
  assert.deepEqual(await info.json(), { occupied: true, subscription_count: 2, user_count: 2 });
});

test("unsubscribe stops delivery and sends no reply", async () => {
  const channel = uniqueName("unsub-");
  const client = await crier.server.subscribedRaw(channel);
  const since = client.mark();
  client.send({ event: "pusher:unsubscribe", data: { channel } });
  await client.roundTrip();

  assert.deepEqual(
    client.messages.slice(since).map((message) => message.json.event),
    ["pusher:pong"],
    "unsubscribe must not be answered",
  );
  const otherChannel = uniqueName("still-subscribed-");
  await client.subscribe(otherChannel);
  await crier.server.api().trigger([channel, otherChannel], "after-unsubscribe", "{}");
  await client.waitForEvent("after-unsubscribe", { channel: otherChannel });
  assert.deepEqual(
    client.events("after-unsubscribe").filter((message) => message.json.channel === channel),
    [],
  );
});

test("unsubscribe from a channel never joined is ignored", async () => {
  const client = await crier.server.connectRaw();
  const since = client.mark();
  client.send({ event: "pusher:unsubscribe", data: { channel: uniqueName("never-joined-") } });
  await client.roundTrip();

  assert.deepEqual(client.events("pusher:error", since), []);
});

test("pusher-js unsubscribe removes the socket from the channel", async () => {
  const client = crier.server.pusherJs();
  const name = uniqueName("public-");
  const channel = client.subscribe(name);
  await nextEmit(channel, "pusher:subscription_succeeded");
  const api = crier.server.api();
  const before = await (await api.get({ path: `/channels/${name}`, params: { info: "subscription_count" } })).json();
  assert.deepEqual(before, { occupied: true, subscription_count: 1 });

  client.unsubscribe(name);
  const after = await waitFor(async () => {
    const response = await api.get({ path: `/channels/${name}`, params: { info: "subscription_count" } });
    const body = await response.json();
    return body.occupied === false ? body : null;
  }, 5000, `${name} to become unoccupied`);
  assert.deepEqual(after, { occupied: false, subscription_count: 0 });
});
