// Idle-connection probing: with --activity_timeout 1 --pong_timeout 1 crier sends a WebSocket
// Ping after 1 s of silence and closes with 4201 when nothing arrives within 1 s more.
// These tests are about time, so they wait in real time with bounds a few seconds above the
// configured timeouts.

import assert from "node:assert/strict";
import { test } from "node:test";

import { sleep, useCrier, waitFor, waitForPusherState } from "./harness.mjs";

const crier = useCrier({ extraArgs: ["--activity_timeout", "1", "--pong_timeout", "1"] });

// activity_timeout + pong_timeout is 2 s; the slack covers timer granularity and a loaded CI.
const CLOSE_DEADLINE_MS = 6_000;
// Longer than activity_timeout + pong_timeout, so a connection that survives it was probed.
const SURVIVAL_MS = 3_500;

test("connection_established reports the configured activity_timeout", async () => {
  const client = await crier.server.connectRaw();

  assert.equal(client.activityTimeout, 1);
});

test("client that never answers pings gets pusher:error 4201 then close 4201", async () => {
  const client = await crier.server.connectRaw({ wsOptions: { autoPong: false } });
  const started = Date.now();
  const closed = await client.waitForClose(CLOSE_DEADLINE_MS);

  assert.ok(client.pings.length >= 1, "the server must probe with a WebSocket Ping frame first");
  const error = client.events("pusher:error").at(-1);
  assert.ok(error, `expected pusher:error before the close; frames: ${client.describeMessages()}`);
  assert.deepEqual(error.json.data, { code: 4201, message: "Pong reply not received" });
  assert.equal(closed.code, 4201);
  assert.ok(client.pings[0] - started >= 500, "the probe must wait for the activity timeout");
});

test("client whose WebSocket library answers pings stays connected", async () => {
  const client = await crier.server.connectRaw();
  await sleep(SURVIVAL_MS);

  assert.ok(client.pings.length >= 1, "an idle connection must be probed");
  assert.equal(client.closeEvent, null);
  await client.roundTrip();
});

test("pusher:ping text frames count as activity without WebSocket pongs", async () => {
  const client = await crier.server.connectRaw({ wsOptions: { autoPong: false } });
  const started = Date.now();
  while (Date.now() - started < SURVIVAL_MS) {
    client.send({ event: "pusher:ping", data: {} });
    await sleep(300);
  }

  assert.equal(client.closeEvent, null);
  assert.deepEqual(client.events("pusher:error"), []);
});

test("pusher-js stays connected past the pong timeout", async () => {
  const client = crier.server.pusherJs();
  await waitForPusherState(client, "connected");
  const socketId = client.connection.socket_id;
  await sleep(SURVIVAL_MS);

  assert.equal(client.connection.state, "connected");
  assert.equal(client.connection.socket_id, socketId, "pusher-js must not have reconnected");
});

test("4201 close unsubscribes the dead socket", async () => {
  const client = await crier.server.connectRaw({ wsOptions: { autoPong: false } });
  await client.subscribe("liveness-presence-free");
  await client.waitForClose(CLOSE_DEADLINE_MS);
  const api = crier.server.api();

  await waitFor(
    async () => {
      const response = await api.get({ path: "/channels/liveness-presence-free" });
      return (await response.json()).occupied === false;
    },
    5000,
    "liveness-presence-free to become unoccupied",
  );
});
