// Redis restarts while events flow: the nodes keep serving their own clients, log the loss
// and the restoration, and afterwards deliver across nodes again without duplicates, with
// presence rosters that include the changes made while Redis was away.

import assert from "node:assert/strict";
import { test } from "node:test";

import { sleep, uniqueName, waitFor } from "../js/harness.mjs";
import {
  PusherRecorder,
  RawRecorder,
  apiClient,
  apiGet,
  closeAll,
  clusterBarrier,
  connectRawTo,
  countId,
  logLines,
  pusherJsClient,
  startCluster,
  waitForLog,
} from "./harness.mjs";

const TRIGGER_INTERVAL_MS = 50;
// Upper bounds of the traffic loop, far above what one run sends.
const MAX_TRIGGERS = 2_000;
const MAX_TRAFFIC_MS = 60_000;
const OUTAGE_MS = 2_000;
const LOSS_NOTICED_WITHIN_MS = 5_000;
// crier retries with a backoff of at most 5 s, and a heartbeat or event publish of every node
// runs into the closed connection well within that.
const RESTORED_WITHIN_MS = 15_000;
const TRAFFIC_AFTER_RESTORE_MS = 1_000;

/**
 * Triggers one event every TRIGGER_INTERVAL_MS, alternating between the nodes' APIs, until
 * stop() is called. Each entry of `sent` has the event id, the node index, the send time and
 * the HTTP status.
 */
function startTraffic(nodes, channel) {
  const sent = [];
  let stopped = false;
  const startedAt = Date.now();
  const apis = nodes.map((node) => apiClient(node.port));
  const done = (async () => {
    for (let sequence = 0; sequence < MAX_TRIGGERS && !stopped && Date.now() - startedAt < MAX_TRAFFIC_MS; sequence += 1) {
      const via = sequence % nodes.length;
      const entry = { id: `event-${sequence}`, via, sentAt: Date.now(), status: null };
      sent.push(entry);
      try {
        const response = await apis[via].trigger(channel, "traffic", { id: entry.id });
        entry.status = response.status;
      } catch (error) {
        entry.status = `error: ${error.message}`;
      }
      await sleep(TRIGGER_INTERVAL_MS);
    }
  })();
  return {
    sent,
    async stop() {
      stopped = true;
      await done;
    },
  };
}

function memberEvents(recorder, channel, kind) {
  if (recorder instanceof PusherRecorder) {
    return recorder.received(channel, `pusher:member_${kind}`).map((member) => member.id);
  }
  return recorder.received(channel, `pusher_internal:member_${kind}`).map((data) => data.user_id);
}

async function usersOn(node, channel) {
  const body = await apiGet(node.port, `/channels/${channel}/users`);
  return body.users.map((user) => user.id).sort();
}

test("redis restart during traffic", async (t) => {
  // The default node timeout (15 s) outlasts the outage, so no node may time another out.
  const cluster = await startCluster({ count: 2 });
  const clients = new Set();
  t.after(async () => {
    closeAll(clients);
    await cluster.stop();
  });
  const { nodes, redis } = cluster;
  const [nodeA, nodeB] = nodes;
  const channel = uniqueName("traffic-");
  const presence = uniqueName("presence-restart-");

  // Subscribers of the traffic channel: a raw client and a pusher-js client on each node.
  const subscribers = [];
  for (const [index, node] of nodes.entries()) {
    const raw = await connectRawTo(node.port, clients);
    await raw.subscribe(channel);
    subscribers.push({ node: index, recorder: new RawRecorder(raw, `raw subscriber on node ${index + 1}`) });
    const pusher = new PusherRecorder(pusherJsClient(node.port, { clients }), `pusher-js subscriber on node ${index + 1}`);
    await pusher.subscribe(channel);
    subscribers.push({ node: index, recorder: pusher });
  }
  const recorders = subscribers.map((subscriber) => subscriber.recorder);

  // Presence: steady members on both nodes, one member who leaves and one who joins during
  // the outage, and a pusher-js watcher on each node.
  const join = async (node, userId) => {
    const client = await connectRawTo(node.port, clients);
    await client.subscribePresence(presence, { user_id: userId });
    return client;
  };
  await join(nodeA, "steady-a");
  await join(nodeB, "steady-b");
  const leaver = await join(nodeB, "leaver");
  const watchers = [];
  for (const [index, node] of nodes.entries()) {
    const recorder = new PusherRecorder(
      pusherJsClient(node.port, { presenceData: { user_id: `watcher-${index}` }, clients }),
      `pusher-js watcher on node ${index + 1}`,
    );
    const channelObject = await recorder.subscribe(presence);
    watchers.push({ recorder, channelObject });
  }
  await clusterBarrier(nodes, presence, watchers.map((watcher) => watcher.recorder));
  const before = ["leaver", "steady-a", "steady-b", "watcher-0", "watcher-1"];
  for (const node of nodes) {
    assert.deepEqual(await usersOn(node, presence), before, `users before the outage on port ${node.port}`);
  }

  const traffic = startTraffic(nodes, channel);
  t.after(() => traffic.stop());
  await sleep(1_000);

  // Stop Redis. The nodes notice the closed connection and log it.
  const logMarks = nodes.map((node) => node.stderrLines.length);
  const outageStartedAt = Date.now();
  await redis.stop();
  for (const [index, node] of nodes.entries()) {
    await waitForLog(node, /redis connection lost; local clients keep working, reconnecting/, LOSS_NOTICED_WITHIN_MS, {
      since: logMarks[index],
    });
  }

  // Presence changes on node 2 while Redis is away.
  leaver.close();
  await waitFor(async () => !(await usersOn(nodeB, presence)).includes("leaver"), 5_000, "node 2 to drop leaver locally");
  await join(nodeB, "joiner");

  await sleep(Math.max(0, outageStartedAt + OUTAGE_MS - Date.now()));
  await redis.start();
  const redisBackAt = Date.now();
  for (const [index, node] of nodes.entries()) {
    await waitForLog(node, /redis connection restored, announcing this node's state/, RESTORED_WITHIN_MS, {
      since: logMarks[index],
    });
  }
  const restoredAt = Date.now();
  t.diagnostic(`both nodes restored ${restoredAt - redisBackAt} ms after redis-server started again`);

  await sleep(TRAFFIC_AFTER_RESTORE_MS);
  await traffic.stop();
  await clusterBarrier(nodes, channel, recorders, 10_000);
  await clusterBarrier(nodes, presence, watchers.map((watcher) => watcher.recorder), 10_000);

  // Every trigger was accepted, also while Redis was away.
  const failed = traffic.sent.filter((entry) => entry.status !== 200);
  assert.deepEqual(failed, [], "triggers that did not return 200");

  // No client received any event twice.
  for (const recorder of recorders) {
    const counts = new Map();
    for (const data of recorder.received(channel, "traffic")) {
      counts.set(data.id, (counts.get(data.id) ?? 0) + 1);
    }
    const duplicates = [...counts].filter(([, count]) => count > 1);
    assert.deepEqual(duplicates, [], `${recorder.label}: events received more than once`);
  }

  // Every client got every event sent before the outage or after both nodes were restored.
  // In between, at least the clients on the node that took the trigger got it.
  const beforeOutage = traffic.sent.filter((entry) => entry.sentAt < outageStartedAt);
  const afterRestore = traffic.sent.filter((entry) => entry.sentAt > restoredAt);
  const during = traffic.sent.filter((entry) => entry.sentAt >= outageStartedAt && entry.sentAt <= restoredAt);
  assert.ok(beforeOutage.length >= 10, `only ${beforeOutage.length} events before the outage`);
  assert.ok(afterRestore.length >= 10, `only ${afterRestore.length} events after the restoration`);
  for (const { node, recorder } of subscribers) {
    const missing = [...beforeOutage, ...afterRestore].filter((entry) => countId(recorder, channel, "traffic", entry.id) !== 1);
    assert.deepEqual(missing.map((entry) => entry.id), [], `${recorder.label}: events missing outside the outage`);
    const missingLocal = during.filter((entry) => entry.via === node && countId(recorder, channel, "traffic", entry.id) !== 1);
    assert.deepEqual(missingLocal.map((entry) => entry.id), [], `${recorder.label}: local events missing during the outage`);
  }
  const lostRemote = subscribers.map(
    ({ node, recorder }) =>
      `${recorder.label}: ${during.filter((entry) => entry.via !== node && countId(recorder, channel, "traffic", entry.id) === 0).length}`,
  );
  t.diagnostic(`${during.length} events sent during the outage; remote deliveries lost per client: ${lostRemote.join(", ")}`);

  // Rosters agree again on both nodes and include the changes made during the outage.
  const after = ["joiner", "steady-a", "steady-b", "watcher-0", "watcher-1"];
  for (const node of nodes) {
    assert.deepEqual(await usersOn(node, presence), after, `users after the restoration on port ${node.port}`);
    const info = await apiGet(node.port, `/channels/${presence}`, { info: "user_count,subscription_count" });
    assert.deepEqual(info, { occupied: true, user_count: 5, subscription_count: 5 }, `presence info on port ${node.port}`);
  }
  // Each watcher got one member event for each change on node 2, and no watcher saw a steady
  // member leave.
  const [watcherA, watcherB] = watchers;
  assert.deepEqual(memberEvents(watcherA.recorder, presence, "removed"), ["leaver"]);
  assert.deepEqual(memberEvents(watcherA.recorder, presence, "added").filter((id) => id === "joiner"), ["joiner"]);
  assert.deepEqual(memberEvents(watcherB.recorder, presence, "removed"), ["leaver"]);
  assert.deepEqual(memberEvents(watcherB.recorder, presence, "added").filter((id) => id === "joiner"), ["joiner"]);
  for (const { channelObject, recorder } of watchers) {
    const members = [];
    channelObject.members.each((member) => members.push(member.id));
    assert.deepEqual(members.sort(), after, `${recorder.label} members`);
  }
  // A client that subscribes on node 1 now gets node 2's members in its member list.
  const late = new PusherRecorder(pusherJsClient(nodeA.port, { presenceData: { user_id: "late" }, clients }), "late pusher-js on node 1");
  const lateChannel = await late.subscribe(presence);
  const lateMembers = [];
  lateChannel.members.each((member) => lateMembers.push(member.id));
  assert.deepEqual(lateMembers.sort(), ["joiner", "late", "steady-a", "steady-b", "watcher-0", "watcher-1"]);

  for (const node of nodes) {
    assert.equal(logLines(node, /cluster node timed out/).length, 0, `a node timed out:\n${node.stderrText()}`);
  }
});

test("outage beyond node_timeout converges", async (t) => {
  const nodeTimeoutSecs = 3;
  const cluster = await startCluster({ count: 2, nodeTimeout: nodeTimeoutSecs });
  const clients = new Set();
  t.after(async () => {
    closeAll(clients);
    await cluster.stop();
  });
  const { nodes, redis } = cluster;
  const [nodeA, nodeB] = nodes;
  const presence = uniqueName("presence-long-outage-");

  const memberA = await connectRawTo(nodeA.port, clients);
  await memberA.subscribePresence(presence, { user_id: "member-a" });
  const memberB = await connectRawTo(nodeB.port, clients);
  await memberB.subscribePresence(presence, { user_id: "member-b" });
  const watcher = new PusherRecorder(
    pusherJsClient(nodeA.port, { presenceData: { user_id: "watcher-a" }, clients }),
    "pusher-js watcher on node 1",
  );
  const watcherChannel = await watcher.subscribe(presence);
  await clusterBarrier(nodes, presence, [watcher]);
  const everyone = ["member-a", "member-b", "watcher-a"];

  // Without Redis, each node stops hearing the other and drops its members after the timeout.
  const logMarks = nodes.map((node) => node.stderrLines.length);
  await redis.stop();
  const timeoutBoundMs = (nodeTimeoutSecs * 4_000) / 3 + 2_000;
  await waitFor(
    async () => JSON.stringify(await usersOn(nodeA, presence)) === JSON.stringify(["member-a", "watcher-a"]),
    timeoutBoundMs,
    "node 1 to drop node 2's members",
  );
  await waitFor(
    async () => JSON.stringify(await usersOn(nodeB, presence)) === JSON.stringify(["member-b"]),
    timeoutBoundMs,
    "node 2 to drop node 1's members",
  );
  assert.deepEqual(memberEvents(watcher, presence, "removed"), ["member-b"]);

  await redis.start();
  for (const [index, node] of nodes.entries()) {
    await waitForLog(node, /redis connection restored/, RESTORED_WITHIN_MS, { since: logMarks[index] });
  }
  await clusterBarrier(nodes, presence, [watcher], 10_000);

  for (const node of nodes) {
    assert.deepEqual(await usersOn(node, presence), everyone, `users after the restoration on port ${node.port}`);
  }
  assert.deepEqual(memberEvents(watcher, presence, "removed"), ["member-b"]);
  assert.deepEqual(memberEvents(watcher, presence, "added").filter((id) => id === "member-b"), ["member-b"]);
  const members = [];
  watcherChannel.members.each((member) => members.push(member.id));
  assert.deepEqual(members.sort(), everyone);
  // member-b's own socket saw member-a and watcher-a leave and come back once each. It also
  // saw watcher-a's first join, before the outage.
  const memberBRecorder = new RawRecorder(memberB, "member-b on node 2");
  assert.deepEqual(memberEvents(memberBRecorder, presence, "removed"), ["member-a", "watcher-a"]);
  assert.deepEqual(memberEvents(memberBRecorder, presence, "added").sort(), ["member-a", "watcher-a", "watcher-a"]);
});
