// Client events (client-*): delivery, the sender exclusion, user_id on presence channels, every
// rejection and the 10-per-second rate limit.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  barrier,
  nextEmit,
  startCrier,
  uniqueName,
  useCrier,
  waitFor,
} from "./harness.mjs";

const crier = useCrier();

async function privatePair(prefix = "private-") {
  const channel = uniqueName(prefix);
  const sender = await crier.server.connectRaw();
  await sender.subscribePrivate(channel);
  const receiver = await crier.server.connectRaw();
  await receiver.subscribePrivate(channel);
  return { channel, sender, receiver };
}

async function expectClientEventError(client, since) {
  const error = await client.waitForEvent("pusher:error", { since });
  assert.equal(error.json.data.code, null);
  assert.equal(typeof error.json.data.message, "string");
  assert.equal(error.json.channel, undefined);
  return error.json.data.message;
}

test("client event reaches other subscribers unchanged and is not echoed", async () => {
  const { channel, sender, receiver } = await privatePair();
  const third = await crier.server.connectRaw();
  await third.subscribePrivate(channel);
  const senderSince = sender.mark();
  sender.send('{"event":"client-typing","data":{"typing":true,"text":"Grüße 🚀"},"channel":"' + channel + '"}');

  for (const client of [receiver, third]) {
    const event = await client.waitForEvent("client-typing", { channel });
    assert.deepEqual(event.json, { event: "client-typing", channel, data: { typing: true, text: "Grüße 🚀" } });
  }
  const [senderBarrier] = await barrier(crier.server, channel, [sender]);
  assert.deepEqual(
    sender.messages.slice(senderSince, senderBarrier).filter((message) => message.json?.event === "client-typing"),
    [],
    "the sender must not receive its own client event",
  );
  assert.deepEqual(sender.events("pusher:error", senderSince), []);
});

test("client event data sent as a string stays a string", async () => {
  const { channel, sender, receiver } = await privatePair();
  sender.send({ event: "client-string", channel, data: '{"typing":true}' });
  const event = await receiver.waitForEvent("client-string", { channel });

  assert.equal(event.json.data, '{"typing":true}');
});

test("client event is rebuilt without a sender-supplied user_id on private channels", async () => {
  const { channel, sender, receiver } = await privatePair();
  sender.send({ event: "client-spoof", channel, data: {}, user_id: "someone-else", extra: 1 });
  const event = await receiver.waitForEvent("client-spoof", { channel });

  assert.deepEqual(event.json, { event: "client-spoof", channel, data: {} });
});

test("pusher-js client events travel between two pusher-js clients", async () => {
  const name = uniqueName("private-");
  const sender = crier.server.pusherJs();
  const receiver = crier.server.pusherJs();
  const sendChannel = sender.subscribe(name);
  const receiveChannel = receiver.subscribe(name);
  // Both listeners are bound before either reply can arrive.
  await Promise.all([
    nextEmit(sendChannel, "pusher:subscription_succeeded"),
    nextEmit(receiveChannel, "pusher:subscription_succeeded"),
  ]);
  const received = nextEmit(receiveChannel, "client-hello");

  assert.equal(sendChannel.trigger("client-hello", { text: "日本" }), true);
  const [data] = await received;
  assert.deepEqual(data, { text: "日本" });
});

test("presence client event carries the sender's user_id, overriding a supplied one", async () => {
  const channel = uniqueName("presence-");
  const sender = await crier.server.presenceRaw(channel, { user_id: "u-sender", user_info: {} });
  const receiver = await crier.server.presenceRaw(channel, { user_id: "u-receiver" });
  sender.send({ event: "client-typing", channel, data: { typing: true }, user_id: "forged" });
  const event = await receiver.waitForEvent("client-typing", { channel });

  assert.deepEqual(event.json, { event: "client-typing", channel, data: { typing: true }, user_id: "u-sender" });
});

test("pusher-js receives user_id metadata for presence client events", async () => {
  const name = uniqueName("presence-");
  const receiver = crier.server.pusherJs({ presenceData: { user_id: "pjs-receiver" } });
  const channel = receiver.subscribe(name);
  await nextEmit(channel, "pusher:subscription_succeeded");
  const sender = await crier.server.presenceRaw(name, { user_id: "raw-sender" });
  const received = nextEmit(channel, "client-wave");
  sender.send({ event: "client-wave", channel: name, data: { hand: "left" } });
  const [data, metadata] = await received;

  assert.deepEqual(data, { hand: "left" });
  assert.equal(metadata.user_id, "raw-sender");
});

for (const prefix of ["public-", "cache-"]) {
  test(`client event on a ${prefix.slice(0, -1)} channel is rejected with pusher:error`, async () => {
    const channel = uniqueName(prefix);
    const sender = await crier.server.subscribedRaw(channel);
    const receiver = await crier.server.subscribedRaw(channel);
    const since = sender.mark();
    sender.send({ event: "client-nope", channel, data: {} });
    await expectClientEventError(sender, since);

    const [receiverBarrier] = await barrier(crier.server, channel, [receiver]);
    assert.deepEqual(
      receiver.messages.slice(0, receiverBarrier).filter((message) => message.json?.event === "client-nope"),
      [],
    );
    await sender.roundTrip();
  });
}

test("client event on an encrypted channel is rejected with pusher:error", async () => {
  const { channel, sender, receiver } = await privatePair("private-encrypted-");
  const since = sender.mark();
  sender.send({ event: "client-secret", channel, data: { nonce: "n", ciphertext: "c" } });
  await expectClientEventError(sender, since);

  const [receiverBarrier] = await barrier(crier.server, channel, [receiver]);
  assert.deepEqual(
    receiver.messages.slice(0, receiverBarrier).filter((message) => message.json?.event === "client-secret"),
    [],
  );
});

test("client event to a channel the sender has not joined is rejected", async () => {
  const { channel, receiver } = await privatePair();
  const outsider = await crier.server.connectRaw();
  const since = outsider.mark();
  outsider.send({ event: "client-intrude", channel, data: {} });
  const message = await expectClientEventError(outsider, since);

  assert.equal(message, `Cannot broadcast client event (connection not subscribed to channel ${channel})`);
  const [receiverBarrier] = await barrier(crier.server, channel, [receiver]);
  assert.deepEqual(
    receiver.messages.slice(0, receiverBarrier).filter((message) => message.json?.event === "client-intrude"),
    [],
  );
});

test("client event without a channel is rejected with pusher:error", async () => {
  const { sender } = await privatePair();
  const since = sender.mark();
  sender.send({ event: "client-nowhere", data: {} });
  await expectClientEventError(sender, since);
  await sender.roundTrip();
});

test("client event name longer than 200 characters is rejected", async () => {
  const { channel, sender } = await privatePair();
  const since = sender.mark();
  sender.send({ event: `client-${"n".repeat(194)}`, channel, data: {} });
  await expectClientEventError(sender, since);
});

test("client event with data above 10 KB is rejected and the connection stays", async () => {
  const { channel, sender, receiver } = await privatePair();
  const since = sender.mark();
  sender.send({ event: "client-big", channel, data: "x".repeat(10_241) });
  await expectClientEventError(sender, since);
  await sender.roundTrip();

  sender.send({ event: "client-small", channel, data: "x".repeat(10_000) });
  await receiver.waitForEvent("client-small", { channel });
  assert.deepEqual(receiver.events("client-big"), []);
});

test("client event rate above 10/s gets 4301", async () => {
  const { channel, sender, receiver } = await privatePair();
  const since = sender.mark();
  const sent = 25;
  for (let i = 0; i < sent; i += 1) {
    sender.send({ event: "client-burst", channel, data: { i } });
  }
  await sender.roundTrip();
  const rateErrors = sender.events("pusher:error", since).filter((message) => message.json.data.code === 4301);

  // Sent within a few milliseconds, the burst meets at most two one-second windows, so at
  // most 20 may pass and at least 5 must be rejected.
  assert.ok(rateErrors.length >= 5, `expected at least 5 errors with code 4301, got ${rateErrors.length}`);
  assert.equal(rateErrors[0].json.data.message, "Client event rejected due to rate limit");
  await waitFor(
    () => receiver.events("client-burst").length + rateErrors.length === sent,
    5000,
    "every accepted client event to arrive",
  );
  assert.ok(receiver.events("client-burst").length >= 10, "the first 10 events in a second are allowed");
  assert.equal(sender.isOpen, true);
  assert.equal(sender.closeEvent, null);
});

test("--disable_client_events rejects client events with Pusher's text", async (t) => {
  const server = await startCrier({ extraArgs: ["--disable_client_events"] });
  t.after(() => server.stop());
  const channel = uniqueName("private-");
  const sender = await server.connectRaw();
  await sender.subscribePrivate(channel);
  const receiver = await server.connectRaw();
  await receiver.subscribePrivate(channel);
  const since = sender.mark();
  sender.send({ event: "client-off", channel, data: {} });
  const error = await sender.waitForEvent("pusher:error", { since });

  assert.deepEqual(error.json.data, {
    code: null,
    message: "To send client events, you must enable this feature in the Settings page of your dashboard.",
  });
  const [receiverBarrier] = await barrier(server, channel, [receiver]);
  assert.deepEqual(
    receiver.messages.slice(0, receiverBarrier).filter((message) => message.json?.event === "client-off"),
    [],
  );
});
