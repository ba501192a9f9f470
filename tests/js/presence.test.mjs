// Presence channels: member lists, member_added/member_removed per user (not per socket),
// user_id normalisation and channel_data validation.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  barrier,
  channelAuth,
  decodeData,
  nextEmit,
  uniqueName,
  useCrier,
  waitFor,
} from "./harness.mjs";

const crier = useCrier();

async function channelInfo(channel, info = "user_count,subscription_count") {
  const response = await crier.server.api().get({ path: `/channels/${channel}`, params: { info } });
  return response.json();
}

/** Waits until the server counts `count` sockets on `channel`, i.e. it has handled a disconnect. */
function waitForSubscriptionCount(channel, count) {
  return waitFor(
    async () => (await channelInfo(channel, "subscription_count")).subscription_count === count,
    5000,
    `subscription_count ${count} on ${channel}`,
  );
}

function memberEvents(client, name, from, to) {
  return client.messages
    .slice(from, to)
    .filter((message) => message.json?.event === name)
    .map((message) => decodeData(message));
}

test("presence subscription_succeeded lists ids, hash and count as a JSON string", async () => {
  const channel = uniqueName("presence-lobby-");
  await crier.server.presenceRaw(channel, { user_id: "u-1001", user_info: { name: "Ada", role: "admin" } });
  const client = await crier.server.connectRaw();
  const succeeded = await client.subscribePresence(channel, { user_id: "u-2002", user_info: { name: "Bo" } });

  assert.equal(typeof succeeded.json.data, "string");
  const { presence } = decodeData(succeeded);
  assert.deepEqual([...presence.ids].sort(), ["u-1001", "u-2002"]);
  assert.deepEqual(presence.hash, { "u-1001": { name: "Ada", role: "admin" }, "u-2002": { name: "Bo" } });
  assert.equal(presence.count, 2);
});

test("member_added reaches other members but not the joining socket", async () => {
  const channel = uniqueName("presence-");
  const first = await crier.server.presenceRaw(channel, { user_id: "first", user_info: { n: 1 } });
  const firstSince = first.mark();
  const second = await crier.server.connectRaw();
  const secondSince = second.mark();
  await second.subscribePresence(channel, { user_id: "second", user_info: { n: 2 } });
  const added = await first.waitForEvent("pusher_internal:member_added", { since: firstSince, channel });

  assert.equal(added.json.data, '{"user_id":"second","user_info":{"n":2}}');
  const [secondBarrier] = await barrier(crier.server, channel, [second]);
  assert.deepEqual(memberEvents(second, "pusher_internal:member_added", secondSince, secondBarrier), []);
});

test("member_removed carries only user_id when the last socket unsubscribes", async () => {
  const channel = uniqueName("presence-");
  const observer = await crier.server.presenceRaw(channel, { user_id: "observer" });
  const leaver = await crier.server.presenceRaw(channel, { user_id: "leaver", user_info: { name: "L" } });
  const since = observer.mark();
  leaver.send({ event: "pusher:unsubscribe", data: { channel } });
  const removed = await observer.waitForEvent("pusher_internal:member_removed", { since, channel });

  assert.equal(removed.json.data, '{"user_id":"leaver"}');
});

test("multi-tab user is one presence member", async () => {
  const channel = uniqueName("presence-tabs-");
  const observer = await crier.server.presenceRaw(channel, { user_id: "observer" });
  const since = observer.mark();

  const tab1 = await crier.server.presenceRaw(channel, { user_id: "multi", user_info: { tab: 1 } });
  const added = await observer.waitForEvent("pusher_internal:member_added", { since, channel });
  assert.deepEqual(decodeData(added), { user_id: "multi", user_info: { tab: 1 } });

  const tab2 = await crier.server.connectRaw();
  const tab2Succeeded = await tab2.subscribePresence(channel, { user_id: "multi", user_info: { tab: 2 } });
  const { presence } = decodeData(tab2Succeeded);
  assert.equal(presence.count, 2, "two distinct users");
  assert.deepEqual([...presence.ids].sort(), ["multi", "observer"]);
  assert.deepEqual(presence.hash.multi, { tab: 1 }, "the first socket's user_info stays");

  let [observerBarrier] = await barrier(crier.server, channel, [observer]);
  assert.equal(
    memberEvents(observer, "pusher_internal:member_added", since, observerBarrier).length,
    1,
    "the second socket of a user must not produce member_added",
  );
  assert.deepEqual(await channelInfo(channel), { occupied: true, user_count: 2, subscription_count: 3 });
  const users = await (await crier.server.api().get({ path: `/channels/${channel}/users` })).json();
  assert.deepEqual(users.users.map((user) => user.id).sort(), ["multi", "observer"]);

  const beforeTab1Close = observer.mark();
  tab1.close();
  await waitForSubscriptionCount(channel, 2);
  [observerBarrier] = await barrier(crier.server, channel, [observer]);
  assert.deepEqual(
    memberEvents(observer, "pusher_internal:member_removed", beforeTab1Close, observerBarrier),
    [],
    "closing one of two sockets must not remove the member",
  );
  assert.deepEqual(await channelInfo(channel), { occupied: true, user_count: 2, subscription_count: 2 });

  const beforeTab2Close = observer.mark();
  tab2.close();
  const removed = await observer.waitForEvent("pusher_internal:member_removed", { since: beforeTab2Close, channel });
  assert.deepEqual(decodeData(removed), { user_id: "multi" });
  assert.deepEqual(await channelInfo(channel), { occupied: true, user_count: 1, subscription_count: 1 });
});

test("pusher-js sees member_added once and member_removed after the user's last socket leaves", async () => {
  const channelName = uniqueName("presence-pjs-");
  const watcher = crier.server.pusherJs({ presenceData: { user_id: "watcher", user_info: { name: "W" } } });
  const channel = watcher.subscribe(channelName);
  await nextEmit(channel, "pusher:subscription_succeeded");
  const added = [];
  const removed = [];
  channel.bind("pusher:member_added", (member) => added.push(member));
  channel.bind("pusher:member_removed", (member) => removed.push(member));

  const tab1 = await crier.server.presenceRaw(channelName, { user_id: "tabbed", user_info: { name: "T" } });
  await waitFor(() => added.length === 1, 5000, "pusher-js member_added");
  assert.equal(added[0].id, "tabbed");
  assert.deepEqual(added[0].info, { name: "T" });
  assert.equal(channel.members.count, 2);

  const tab2 = await crier.server.presenceRaw(channelName, { user_id: "tabbed", user_info: { name: "T" } });
  tab1.close();
  await waitForSubscriptionCount(channelName, 2);
  const marker = nextEmit(channel, "marker");
  await crier.server.api().trigger(channelName, "marker", "{}");
  await marker;
  assert.equal(added.length, 1);
  assert.equal(removed.length, 0);
  assert.equal(channel.members.count, 2);

  tab2.close();
  await waitFor(() => removed.length === 1, 5000, "pusher-js member_removed");
  assert.equal(removed[0].id, "tabbed");
  assert.equal(channel.members.count, 1);
});

test("disconnect without unsubscribe removes the member", async () => {
  const channel = uniqueName("presence-");
  const observer = await crier.server.presenceRaw(channel, { user_id: "observer" });
  const leaver = await crier.server.presenceRaw(channel, { user_id: "gone" });
  const since = observer.mark();
  await leaver.closeGracefully();
  const removed = await observer.waitForEvent("pusher_internal:member_removed", { since, channel });

  assert.deepEqual(decodeData(removed), { user_id: "gone" });
});

test("numeric user_id 77 is presented as the string \"77\" everywhere", async () => {
  const channel = uniqueName("presence-room-");
  const observer = await crier.server.presenceRaw(channel, { user_id: "observer" });
  const since = observer.mark();
  const numeric = await crier.server.connectRaw();
  const succeeded = await numeric.subscribePresence(channel, '{"user_id":77,"user_info":{}}');

  const { presence } = decodeData(succeeded);
  assert.ok(presence.ids.includes("77"), `ids ${JSON.stringify(presence.ids)} must contain the string "77"`);
  assert.ok(!presence.ids.includes(77));
  assert.deepEqual(presence.hash["77"], {});
  const added = await observer.waitForEvent("pusher_internal:member_added", { since, channel });
  assert.equal(added.json.data, '{"user_id":"77","user_info":{}}');

  const users = await (await crier.server.api().get({ path: `/channels/${channel}/users` })).json();
  assert.deepEqual(users.users.map((user) => user.id).sort(), ["77", "observer"]);

  const clientSince = observer.mark();
  numeric.send({ event: "client-numeric", channel, data: { from: 77 } });
  const clientEvent = await observer.waitForEvent("client-numeric", { since: clientSince, channel });
  assert.equal(clientEvent.json.user_id, "77");

  const removedSince = observer.mark();
  numeric.close();
  const removed = await observer.waitForEvent("pusher_internal:member_removed", { since: removedSince, channel });
  assert.equal(removed.json.data, '{"user_id":"77"}');
});

test("member without user_info is announced without user_info and listed as null", async () => {
  const channel = uniqueName("presence-");
  const observer = await crier.server.presenceRaw(channel, { user_id: "observer" });
  const since = observer.mark();
  const bare = await crier.server.connectRaw();
  const succeeded = await bare.subscribePresence(channel, '{"user_id":"bare"}');

  const added = await observer.waitForEvent("pusher_internal:member_added", { since, channel });
  assert.deepEqual(decodeData(added), { user_id: "bare" });
  const { presence } = decodeData(succeeded);
  assert.ok(Object.hasOwn(presence.hash, "bare"));
  assert.equal(presence.hash.bare, null);
});

test("channel_data in Python's json.dumps style is signed and stored as received", async () => {
  const channel = uniqueName("presence-");
  const client = await crier.server.connectRaw();
  const pythonStyle = '{"user_id": "py", "user_info": {"name": "Gr\\u00fc\\u00dfe"}}';
  const succeeded = await client.subscribePresence(channel, pythonStyle);

  assert.deepEqual(decodeData(succeeded).presence.hash.py, { name: "Grüße" });
});

for (const [label, channelData] of [
  ["not JSON", "not json"],
  ["a JSON array", "[1,2]"],
  ["no user_id", '{"user_info":{}}'],
  ["a boolean user_id", '{"user_id":true}'],
  ["an object user_id", '{"user_id":{"id":1}}'],
]) {
  test(`presence channel_data that is ${label} is rejected with AuthError 401`, async () => {
    const channel = uniqueName("presence-");
    const client = await crier.server.connectRaw();
    const since = client.mark();
    client.sendSubscribe(channel, { auth: channelAuth(client.socketId, channel, channelData), channelData });
    await client.waitForEvent("pusher:error", { since });
    const subscriptionError = await client.waitForEvent("pusher:subscription_error", { since, channel });

    assert.equal(subscriptionError.json.data.type, "AuthError");
    assert.equal(subscriptionError.json.data.status, 401);
    assert.deepEqual(client.events("pusher_internal:subscription_succeeded", since), []);
  });
}

test("presence without channel_data or sign-in is rejected", async () => {
  const channel = uniqueName("presence-");
  const client = await crier.server.connectRaw();
  const since = client.mark();
  client.sendSubscribe(channel, { auth: channelAuth(client.socketId, channel) });
  const subscriptionError = await client.waitForEvent("pusher:subscription_error", { since, channel });

  assert.equal(subscriptionError.json.data.type, "AuthError");
  assert.equal(subscriptionError.json.data.status, 401);
});

test("presence signature over re-serialized channel_data is rejected", async () => {
  const channel = uniqueName("presence-");
  const client = await crier.server.connectRaw();
  const sent = '{"user_id": "spaced"}';
  const since = client.mark();
  client.sendSubscribe(channel, { auth: channelAuth(client.socketId, channel, '{"user_id":"spaced"}'), channelData: sent });
  const subscriptionError = await client.waitForEvent("pusher:subscription_error", { since, channel });

  assert.equal(subscriptionError.json.data.type, "AuthError");
});

test("user_info above 1 KB is rejected with LimitReached 403", async () => {
  const channel = uniqueName("presence-");
  const client = await crier.server.connectRaw();
  const channelData = JSON.stringify({ user_id: "big", user_info: { blob: "x".repeat(1100) } });
  const since = client.mark();
  client.sendSubscribe(channel, { auth: channelAuth(client.socketId, channel, channelData), channelData });
  const subscriptionError = await client.waitForEvent("pusher:subscription_error", { since, channel });

  assert.equal(subscriptionError.json.data.type, "LimitReached");
  assert.equal(subscriptionError.json.data.status, 403);
});

test("user_id longer than 128 characters is rejected with LimitReached 403", async () => {
  const channel = uniqueName("presence-");
  const client = await crier.server.connectRaw();
  const channelData = JSON.stringify({ user_id: "u".repeat(129) });
  const since = client.mark();
  client.sendSubscribe(channel, { auth: channelAuth(client.socketId, channel, channelData), channelData });
  const subscriptionError = await client.waitForEvent("pusher:subscription_error", { since, channel });

  assert.equal(subscriptionError.json.data.type, "LimitReached");
  assert.equal(subscriptionError.json.data.status, 403);
});
