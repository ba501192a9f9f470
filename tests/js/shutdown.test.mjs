// Graceful shutdown: on SIGTERM every client gets pusher:error 4200 and close 4200, and the
// process exits with status 0. Each test starts its own crier because it ends the process.

import assert from "node:assert/strict";
import http from "node:http";
import { test } from "node:test";

import { APP, startCrier, uniqueName, waitFor, waitForPusherState, withTimeout } from "./harness.mjs";

const EXIT_DEADLINE_MS = 10_000;

test("SIGTERM sends 4200 to every client, closes with 4200 and exits 0", async (t) => {
  const server = await startCrier();
  t.after(() => server.stop());
  const idle = await server.connectRaw();
  const subscribed = await server.subscribedRaw(uniqueName("shutdown-"));
  const presence = await server.presenceRaw(uniqueName("presence-shutdown-"), { user_id: "u" });
  const privateClient = await server.connectRaw();
  await privateClient.subscribePrivate(uniqueName("private-shutdown-"));
  const clients = [idle, subscribed, presence, privateClient];

  server.signal("SIGTERM");
  const status = await withTimeout(server.exited, EXIT_DEADLINE_MS, "crier to exit after SIGTERM");

  for (const client of clients) {
    const closed = await client.waitForClose();
    const error = client.events("pusher:error").at(-1);
    assert.ok(error, `expected pusher:error 4200; frames: ${client.describeMessages()}`);
    assert.equal(error.json.data.code, 4200);
    assert.equal(typeof error.json.data.message, "string");
    assert.equal(closed.code, 4200);
  }
  assert.deepEqual(status, { code: 0, signal: null });
});

test("SIGINT shuts down the same way", async (t) => {
  const server = await startCrier();
  t.after(() => server.stop());
  const client = await server.connectRaw();

  server.signal("SIGINT");
  const status = await withTimeout(server.exited, EXIT_DEADLINE_MS, "crier to exit after SIGINT");
  const closed = await client.waitForClose();

  assert.equal(client.events("pusher:error").at(-1)?.json.data.code, 4200);
  assert.equal(closed.code, 4200);
  assert.deepEqual(status, { code: 0, signal: null });
});

test("SIGTERM right after the listening lines exits 0", async (t) => {
  const server = await startCrier();
  t.after(() => server.stop());

  server.signal("SIGTERM");
  const status = await withTimeout(server.exited, EXIT_DEADLINE_MS, "crier to exit after SIGTERM");

  assert.deepEqual(status, { code: 0, signal: null });
});

test("SIGTERM exits 0 while an HTTP keep-alive connection is idle", async (t) => {
  const server = await startCrier();
  t.after(() => server.stop());
  const agent = new http.Agent({ keepAlive: true });
  t.after(() => agent.destroy());
  const status = await new Promise((resolve, reject) => {
    http
      .get(`${server.apiBaseUrl()}/apps/${APP.id}/channels`, { agent }, (response) => {
        response.resume();
        response.on("end", () => resolve(response.statusCode));
      })
      .on("error", reject);
  });
  assert.equal(status, 401, "an unsigned request is rejected, but the connection stays open");

  server.signal("SIGTERM");
  const exit = await withTimeout(server.exited, EXIT_DEADLINE_MS, "crier to exit after SIGTERM");

  assert.deepEqual(exit, { code: 0, signal: null });
});

test("pusher-js sees error 4200 on shutdown", async (t) => {
  const server = await startCrier();
  t.after(() => server.stop());
  const client = server.pusherJs();
  await waitForPusherState(client, "connected");
  const errors = [];
  client.connection.bind("error", (error) => errors.push(error));

  server.signal("SIGTERM");
  await withTimeout(server.exited, EXIT_DEADLINE_MS, "crier to exit after SIGTERM");

  // A pusher:error on an open connection arrives as {type: "PusherError", data}.
  await waitFor(
    () => errors.some((error) => error?.data?.code === 4200),
    5000,
    "a 4200 error in pusher-js",
  );
  client.disconnect();
});
