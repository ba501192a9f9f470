// A node that dies or shuts down: the other nodes must drop its presence members and
// subscriptions, after the node timeout when it was killed, and at once when it sent its Bye
// message on shutdown.
// Each test starts its own redis-server and nodes.

import assert from "node:assert/strict";
import { test } from "node:test";

import { uniqueName, waitFor, withTimeout } from "../js/harness.mjs";
import {
  PusherRecorder,
  RawRecorder,
  apiGet,
  clusterBarrier,
  connectRawTo,
  closeAll,
  logLines,
  pusherJsClient,
  startCluster,
  waitForLog,
} from "./harness.mjs";

// The smallest node timeout crier accepts. Heartbeats go out every third of it, and a node
// whose heartbeats stop is removed at most node_timeout + node_timeout / 3 after the last one.
const SHORT_NODE_TIMEOUT_SECS = 3;
const KILL_DETECTION_BOUND_MS = (SHORT_NODE_TIMEOUT_SECS * 4_000) / 3 + 2_000;
// The last heartbeat arrives at most one interval before the kill, so no removal may come
// earlier than node_timeout minus that interval. The bound leaves 500 ms for timer jitter.
const KILL_DETECTION_MIN_MS = (SHORT_NODE_TIMEOUT_SECS * 2_000) / 3 - 500;
// With the default node timeout of 15 s, a removal within this bound can only come from the
// node's goodbye message, not from its heartbeats stopping.
const BYE_BOUND_MS = 3_000;

async function usersOn(node, channel) {
  const body = await apiGet(node.port, `/channels/${channel}/users`);
  return body.users.map((user) => user.id).sort();
}

function removedUsers(recorder, channel) {
  if (recorder instanceof PusherRecorder) {
    return recorder.received(channel, "pusher:member_removed").map((member) => member.id);
  }
  return recorder.received(channel, "pusher_internal:member_removed").map((data) => data.user_id);
}

/**
 * Connects the presence members and public subscribers both tests use: alice and bob only on
 * `doomed`, dave on `doomed` and `survivor`, carol on `survivor`, and an observer on every
 * surviving node (a raw client and a pusher-js client).
 */
async function populate({ doomed, survivors, clients }) {
  const presence = uniqueName("presence-failure-");
  const publicChannel = uniqueName("failure-");
  const [survivor] = survivors;
  const join = async (node, userId) => {
    const client = await connectRawTo(node.port, clients);
    await client.subscribePresence(presence, { user_id: userId });
    return client;
  };
  await join(doomed, "alice");
  await join(doomed, "bob");
  await join(doomed, "dave");
  await join(survivor, "dave");
  await join(survivor, "carol");
  for (let count = 0; count < 2; count += 1) {
    const client = await connectRawTo(doomed.port, clients);
    await client.subscribe(publicChannel);
  }

  const observers = [];
  for (const [index, node] of survivors.entries()) {
    const raw = await join(node, `observer-${index}`);
    observers.push(new RawRecorder(raw, `raw observer on surviving node ${index + 1}`));
    const pusher = pusherJsClient(node.port, { presenceData: { user_id: `pjs-observer-${index}` }, clients });
    const recorder = new PusherRecorder(pusher, `pusher-js observer on surviving node ${index + 1}`);
    await recorder.subscribe(presence);
    observers.push(recorder);
  }
  await clusterBarrier([doomed, ...survivors], presence, observers);
  const everyone = ["alice", "bob", "carol", "dave", ...survivors.flatMap((_, index) => [`observer-${index}`, `pjs-observer-${index}`])].sort();
  for (const node of survivors) {
    assert.deepEqual(await usersOn(node, presence), everyone, `users before the failure on port ${node.port}`);
    const info = await apiGet(node.port, `/channels/${publicChannel}`, { info: "subscription_count" });
    assert.deepEqual(info, { occupied: true, subscription_count: 2 });
  }
  // Every remaining user has exactly one socket on the survivors.
  const remaining = everyone.filter((user) => user !== "alice" && user !== "bob");
  return { presence, publicChannel, observers, remaining };
}

/** Asserts that each survivor dropped the doomed node's members and subscriptions only. */
async function assertDoomedNodeForgotten({ survivors, presence, publicChannel, observers, remaining }) {
  await clusterBarrier(survivors, presence, observers);
  for (const observer of observers) {
    assert.deepEqual(removedUsers(observer, presence).sort(), ["alice", "bob"], `${observer.label} member_removed events`);
  }
  for (const node of survivors) {
    assert.deepEqual(await usersOn(node, presence), remaining, `users on port ${node.port}`);
    const info = await apiGet(node.port, `/channels/${presence}`, { info: "user_count,subscription_count" });
    assert.deepEqual(info, {
      occupied: true,
      user_count: remaining.length,
      subscription_count: remaining.length,
    }, `presence channel info on port ${node.port}`);
    const publicInfo = await apiGet(node.port, `/channels/${publicChannel}`, { info: "subscription_count" });
    assert.deepEqual(publicInfo, { occupied: false, subscription_count: 0 }, `public channel on port ${node.port}`);
  }
}

test("killed node's members removed after timeout", async (t) => {
  const cluster = await startCluster({ count: 3, nodeTimeout: SHORT_NODE_TIMEOUT_SECS });
  const clients = new Set();
  t.after(async () => {
    closeAll(clients);
    await cluster.stop();
  });
  const [doomed, ...survivors] = cluster.nodes;
  const setup = await populate({ doomed, survivors, clients });

  const killedAt = Date.now();
  doomed.signal("SIGKILL");
  await withTimeout(doomed.exited, 5_000, "the killed node to exit");
  for (const observer of setup.observers) {
    await waitFor(
      () => {
        const removed = removedUsers(observer, setup.presence);
        return removed.includes("alice") && removed.includes("bob");
      },
      KILL_DETECTION_BOUND_MS,
      `${observer.label} to get member_removed for alice and bob`,
    );
  }
  const elapsedMs = Date.now() - killedAt;
  t.diagnostic(`members removed ${elapsedMs} ms after SIGKILL (node_timeout ${SHORT_NODE_TIMEOUT_SECS} s)`);
  assert.ok(elapsedMs >= KILL_DETECTION_MIN_MS, `members removed ${elapsedMs} ms after SIGKILL, before the node timeout`);

  await assertDoomedNodeForgotten({ survivors, ...setup });
  for (const node of survivors) {
    assert.equal(logLines(node, /cluster node timed out, removing its members/).length, 1, node.stderrText());
  }
});

test("SIGTERM node's members removed at once", async (t) => {
  // The default node timeout (15 s) is far longer than BYE_BOUND_MS.
  const cluster = await startCluster({ count: 3 });
  const clients = new Set();
  t.after(async () => {
    closeAll(clients);
    await cluster.stop();
  });
  const [doomed, ...survivors] = cluster.nodes;
  const setup = await populate({ doomed, survivors, clients });

  const stoppedAt = Date.now();
  doomed.signal("SIGTERM");
  for (const observer of setup.observers) {
    await waitFor(
      () => {
        const removed = removedUsers(observer, setup.presence);
        return removed.includes("alice") && removed.includes("bob");
      },
      BYE_BOUND_MS,
      `${observer.label} to get member_removed for alice and bob`,
    );
  }
  const elapsedMs = Date.now() - stoppedAt;
  t.diagnostic(`members removed ${elapsedMs} ms after SIGTERM (node_timeout 15 s)`);
  const status = await withTimeout(doomed.exited, 10_000, "the stopped node to exit");
  assert.deepEqual(status, { code: 0, signal: null });

  await assertDoomedNodeForgotten({ survivors, ...setup });
  for (const node of survivors) {
    await waitForLog(node, /cluster node left: node=/);
    assert.equal(logLines(node, /cluster node timed out/).length, 0, node.stderrText());
  }
});
