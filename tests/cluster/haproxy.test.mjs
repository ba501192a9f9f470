// Three crier nodes sharing one redis-server, behind HAProxy configured from
// examples/haproxy.cfg. Clients connect through HAProxy or straight to a node, and every
// event, presence change and API count must be the same as on a single server.
//
// The file starts the cluster once. Each test opens its own clients on uniquely named channels
// and closes them at its end. The last test stops a node.

import assert from "node:assert/strict";
import net from "node:net";
import { after, before, test } from "node:test";

import { APP, channelAuth, decodeData, uniqueName, waitFor, waitForPusherState, withTimeout } from "../js/harness.mjs";
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
  randomId,
  startCluster,
  startHaproxy,
  waitForId,
} from "./harness.mjs";

const NODE_COUNT = 3;
// The example config marks a node down after 2 failed checks 1 s apart.
const MARKED_DOWN_WITHIN_MS = 10_000;

let cluster;
let haproxy;

before(async () => {
  // -v logs each opened connection with its socket id, which shows where HAProxy sent it.
  cluster = await startCluster({ count: NODE_COUNT, extraArgs: ["-v"] });
  haproxy = await startHaproxy(cluster.nodes);
});

after(async () => {
  if (haproxy) {
    await haproxy.stop();
  }
  if (cluster) {
    await cluster.stop();
  }
});

/** Returns the indexes of the nodes whose log shows that `socketId` connected there. */
function nodesThatOpened(socketId) {
  const pattern = new RegExp(`connection opened: socket_id=${socketId.replace(".", "\\.")}(\\s|$)`);
  return cluster.nodes.map((node, index) => (logLines(node, pattern).length > 0 ? index : -1)).filter((index) => index >= 0);
}

/** Returns the node index that `socketId` connected to, failing unless there is exactly one. */
async function nodeOf(socketId) {
  const indexes = await waitFor(
    () => {
      const found = nodesThatOpened(socketId);
      return found.length > 0 ? found : undefined;
    },
    5_000,
    `a node log line for socket ${socketId}`,
  );
  assert.equal(indexes.length, 1, `socket ${socketId} was logged by nodes ${indexes.join(", ")}`);
  return indexes[0];
}

/** Counts member_added or member_removed frames for `userId`, for raw and pusher-js recorders. */
function countMemberEvents(recorder, channel, kind, userId) {
  if (recorder instanceof PusherRecorder) {
    return recorder.received(channel, `pusher:member_${kind}`).filter((member) => member.id === userId).length;
  }
  return recorder.received(channel, `pusher_internal:member_${kind}`).filter((data) => data.user_id === userId).length;
}

/** Waits until the API of `node` reports `count` subscriptions on `channel`. */
async function waitForSubscriptionCount(node, channel, count) {
  await waitFor(
    async () => {
      const info = await apiGet(node.port, `/channels/${channel}`, { info: "subscription_count" });
      return info.subscription_count === count;
    },
    5_000,
    `subscription_count ${count} for ${channel} on port ${node.port}`,
  );
}

/** Returns the sorted user ids that GET .../users on `port` lists. */
async function usersOn(port, channel) {
  const body = await apiGet(port, `/channels/${channel}/users`);
  return body.users.map((user) => user.id).sort();
}

function everyApiPort() {
  return [...cluster.nodes.map((node) => node.port), haproxy.port];
}

test("health check passes on every node", async () => {
  const servers = await haproxy.servers();
  for (const name of haproxy.serverNames) {
    assert.equal(servers[name]?.status, "UP", `${name}: ${JSON.stringify(servers[name])}`);
    assert.equal(servers[name].check_status, "L7OK", `${name}: ${JSON.stringify(servers[name])}`);
    assert.equal(servers[name].check_code, "401", `${name}: ${JSON.stringify(servers[name])}`);
  }
});

/** Sends `request` as is on a new TCP connection and returns everything read until EOF. */
function rawHttpExchange(port, request) {
  const exchange = new Promise((resolve, reject) => {
    const socket = net.createConnection({ host: "127.0.0.1", port });
    const chunks = [];
    socket.on("connect", () => socket.write(request));
    socket.on("data", (chunk) => chunks.push(chunk));
    socket.on("error", reject);
    socket.on("close", () => resolve(Buffer.concat(chunks).toString("utf8")));
  });
  return withTimeout(exchange, 5_000, `a response to ${JSON.stringify(request.split("\r\n")[0])} on port ${port}`);
}

// HAProxy 2.6 sends its HTTP checks as HTTP/1.0 unless the config names a version. crier
// answers HTTP/1.0 with 505, so examples/haproxy.cfg sends HTTP/1.1 with a Host header.
test("HTTP/1.0 request gets 505", async () => {
  const reply = await rawHttpExchange(cluster.nodes[0].port, `GET /apps/${APP.id}/channels HTTP/1.0\r\n\r\n`);
  assert.match(reply, /^HTTP\/1\.1 505 /, `reply: ${JSON.stringify(reply)}`);
  assert.match(reply, /"error":"HTTP\/1\.0 is not supported/, `reply: ${JSON.stringify(reply)}`);
});

// HTTP/1.1 (RFC 9112) requires a server to respond with 400 to a request without a Host header.
test("HTTP/1.1 request without Host gets 400", async () => {
  const reply = await rawHttpExchange(
    cluster.nodes[0].port,
    `GET /apps/${APP.id}/channels HTTP/1.1\r\nConnection: close\r\n\r\n`,
  );
  assert.match(reply, /^HTTP\/1\.1 400 /, `reply: ${JSON.stringify(reply)}`);
});

test("HAProxy spreads pusher-js clients over nodes", async (t) => {
  const clients = new Set();
  t.after(() => closeAll(clients));

  // Raw clients connected straight to each node show that a node's log names its own sockets.
  for (const [index, node] of cluster.nodes.entries()) {
    const direct = await connectRawTo(node.port, clients);
    assert.equal(await nodeOf(direct.socketId), index);
  }

  let sessions = await haproxy.sessions();
  assert.deepEqual(Object.values(sessions), [0, 0, 0], `sessions before the test: ${JSON.stringify(sessions)}`);
  const landed = [];
  for (let index = 0; index < NODE_COUNT; index += 1) {
    const client = pusherJsClient(haproxy.port, { clients });
    await waitForPusherState(client, "connected");
    const now = await haproxy.sessions();
    const grown = haproxy.serverNames.filter((name) => now[name] === sessions[name] + 1);
    assert.equal(grown.length, 1, `sessions went from ${JSON.stringify(sessions)} to ${JSON.stringify(now)}`);
    sessions = now;
    const nodeIndex = await nodeOf(client.connection.socket_id);
    assert.equal(haproxy.serverNames[nodeIndex], grown[0], "HAProxy's server and the node's log disagree");
    landed.push(nodeIndex);
  }
  assert.deepEqual([...landed].sort(), [0, 1, 2], `clients landed on nodes ${landed.join(", ")}`);
});

test("trigger through any node delivers once", async (t) => {
  const clients = new Set();
  t.after(() => closeAll(clients));
  const channel = uniqueName("fanout-");
  const otherChannel = uniqueName("fanout-other-");

  const recorders = [];
  for (let index = 0; index < NODE_COUNT; index += 1) {
    const client = pusherJsClient(haproxy.port, { clients });
    const recorder = new PusherRecorder(client, `pusher-js client ${index} via HAProxy`);
    await recorder.subscribe(channel);
    recorders.push(recorder);
  }
  for (const [index, node] of cluster.nodes.entries()) {
    const client = await connectRawTo(node.port, clients);
    await client.subscribe(channel);
    recorders.push(new RawRecorder(client, `raw client on node ${index + 1}`));
  }
  const otherClient = await connectRawTo(cluster.nodes[2].port, clients);
  await otherClient.subscribe(otherChannel);
  const otherRecorder = new RawRecorder(otherClient, "raw client of the second channel on node 3");

  const ids = [];
  const viaProxy = apiClient(haproxy.port);
  for (let count = 0; count < 6; count += 1) {
    const id = randomId();
    ids.push(id);
    const response = await viaProxy.trigger(channel, "fanout", { id });
    assert.equal(response.status, 200);
  }
  const multiId = randomId();
  ids.push(multiId);
  await viaProxy.trigger([channel, otherChannel], "fanout", { id: multiId });
  const batchIds = [randomId(), randomId(), randomId()];
  ids.push(...batchIds);
  await viaProxy.triggerBatch(batchIds.map((id) => ({ channel, name: "fanout", data: { id } })));
  for (const node of cluster.nodes) {
    for (let count = 0; count < 2; count += 1) {
      const id = randomId();
      ids.push(id);
      await apiClient(node.port).trigger(channel, "fanout", { id });
    }
  }

  for (const recorder of recorders) {
    for (const id of ids) {
      await waitForId(recorder, channel, "fanout", id);
    }
  }
  await waitForId(otherRecorder, otherChannel, "fanout", multiId);
  await clusterBarrier(cluster.nodes, channel, recorders);

  for (const recorder of recorders) {
    for (const id of ids) {
      assert.equal(countId(recorder, channel, "fanout", id), 1, `${recorder.label} received event ${id}`);
    }
    assert.equal(recorder.received(channel, "fanout").length, ids.length, `${recorder.label}: extra events`);
  }
  assert.equal(countId(otherRecorder, otherChannel, "fanout", multiId), 1);
});

test("presence member on two nodes counts once", async (t) => {
  const clients = new Set();
  t.after(() => closeAll(clients));
  const [nodeA, nodeB, nodeC] = cluster.nodes;
  const channel = uniqueName("presence-dedup-");

  const observerClient = await connectRawTo(nodeC.port, clients);
  await observerClient.subscribePresence(channel, { user_id: "observer" });
  const observer = new RawRecorder(observerClient, "raw observer on node 3");
  const pusher = pusherJsClient(haproxy.port, {
    presenceData: { user_id: "pjs-observer", user_info: { name: "P" } },
    clients,
  });
  const pusherObserver = new PusherRecorder(pusher, "pusher-js observer via HAProxy");
  const pusherChannel = await pusherObserver.subscribe(channel);

  const aliceOnA = await connectRawTo(nodeA.port, clients);
  await aliceOnA.subscribePresence(channel, { user_id: "alice", user_info: { name: "Alice" } });
  const aliceRecorder = new RawRecorder(aliceOnA, "alice's socket on node 1");
  await waitFor(() => countMemberEvents(observer, channel, "added", "alice") > 0, 5_000, "member_added alice on node 3");
  await waitFor(() => pusherChannel.members.get("alice") !== null, 5_000, "alice in pusher-js members");

  const aliceOnB = await connectRawTo(nodeB.port, clients);
  const succeeded = await aliceOnB.subscribePresence(channel, { user_id: "alice", user_info: { name: "Alice" } });
  const presence = decodeData(succeeded).presence;
  assert.deepEqual([...presence.ids].sort(), ["alice", "observer", "pjs-observer"]);
  assert.equal(presence.count, 3);
  assert.deepEqual(presence.hash.alice, { name: "Alice" });
  assert.deepEqual(presence.hash["pjs-observer"], { name: "P" });

  const watchers = [observer, pusherObserver, aliceRecorder];
  await clusterBarrier(cluster.nodes, channel, watchers);
  assert.equal(countMemberEvents(observer, channel, "added", "alice"), 1);
  assert.equal(countMemberEvents(pusherObserver, channel, "added", "alice"), 1);
  assert.equal(countMemberEvents(aliceRecorder, channel, "added", "alice"), 0);
  assert.equal(pusherChannel.members.count, 3);
  for (const port of everyApiPort()) {
    assert.deepEqual(await usersOn(port, channel), ["alice", "observer", "pjs-observer"], `users on port ${port}`);
    const info = await apiGet(port, `/channels/${channel}`, { info: "user_count,subscription_count" });
    assert.deepEqual(info, { occupied: true, user_count: 3, subscription_count: 4 }, `channel info on port ${port}`);
  }

  // Alice's socket on node 1 leaves, and her socket on node 2 keeps her in the channel.
  aliceOnA.close();
  await waitForSubscriptionCount(nodeA, channel, 3);
  await clusterBarrier(cluster.nodes, channel, [observer, pusherObserver]);
  assert.equal(countMemberEvents(observer, channel, "removed", "alice"), 0);
  assert.equal(countMemberEvents(pusherObserver, channel, "removed", "alice"), 0);
  assert.notEqual(pusherChannel.members.get("alice"), null);
  for (const port of everyApiPort()) {
    assert.deepEqual(await usersOn(port, channel), ["alice", "observer", "pjs-observer"], `users on port ${port}`);
  }

  // Her last socket leaves.
  aliceOnB.close();
  await waitForSubscriptionCount(nodeB, channel, 2);
  await clusterBarrier(cluster.nodes, channel, [observer, pusherObserver]);
  assert.equal(countMemberEvents(observer, channel, "removed", "alice"), 1);
  assert.equal(countMemberEvents(pusherObserver, channel, "removed", "alice"), 1);
  assert.equal(pusherChannel.members.get("alice"), null);
  assert.equal(pusherChannel.members.count, 2);
  for (const port of everyApiPort()) {
    assert.deepEqual(await usersOn(port, channel), ["observer", "pjs-observer"], `users on port ${port}`);
    const info = await apiGet(port, `/channels/${channel}`, { info: "user_count,subscription_count" });
    assert.deepEqual(info, { occupied: true, user_count: 2, subscription_count: 2 }, `channel info on port ${port}`);
  }
});

test("simultaneous join and leave on two nodes", async (t) => {
  const clients = new Set();
  t.after(() => closeAll(clients));
  const [nodeA, nodeB] = cluster.nodes;
  const channel = uniqueName("presence-race-");

  const observers = [];
  for (const [index, node] of cluster.nodes.entries()) {
    const client = await connectRawTo(node.port, clients);
    await client.subscribePresence(channel, { user_id: `observer-${index}` });
    observers.push(new RawRecorder(client, `observer on node ${index + 1}`));
  }
  await clusterBarrier(cluster.nodes, channel, observers);

  // bob's two sockets join without waiting for each other, and later close together.
  const bobOnA = await connectRawTo(nodeA.port, clients);
  const bobOnB = await connectRawTo(nodeB.port, clients);
  await Promise.all([
    bobOnA.subscribePresence(channel, { user_id: "bob" }),
    bobOnB.subscribePresence(channel, { user_id: "bob" }),
  ]);
  await clusterBarrier(cluster.nodes, channel, observers);
  for (const observer of observers) {
    assert.equal(countMemberEvents(observer, channel, "added", "bob"), 1, `${observer.label} member_added bob`);
  }

  bobOnA.close();
  bobOnB.close();
  // Counts are cluster totals, so 3 on both nodes means each handled its own close.
  await waitForSubscriptionCount(nodeA, channel, 3);
  await waitForSubscriptionCount(nodeB, channel, 3);
  await clusterBarrier(cluster.nodes, channel, observers);
  for (const observer of observers) {
    assert.equal(countMemberEvents(observer, channel, "removed", "bob"), 1, `${observer.label} member_removed bob`);
  }
  for (const port of everyApiPort()) {
    assert.deepEqual(await usersOn(port, channel), ["observer-0", "observer-1", "observer-2"], `users on port ${port}`);
  }
});

// A user's first socket sets its user_info until the user leaves entirely, so every node
// must report the first socket's user_info even when a later socket sent another one.
test("presence user_info same on every node", async (t) => {
  const clients = new Set();
  t.after(() => closeAll(clients));
  const [nodeA, nodeB, nodeC] = cluster.nodes;
  const channel = uniqueName("presence-info-");

  const observerClient = await connectRawTo(nodeC.port, clients);
  await observerClient.subscribePresence(channel, { user_id: "observer" });
  const observer = new RawRecorder(observerClient, "raw observer on node 3");
  const first = await connectRawTo(nodeA.port, clients);
  await first.subscribePresence(channel, { user_id: "alice", user_info: { name: "first" } });
  const second = await connectRawTo(nodeB.port, clients);
  await second.subscribePresence(channel, { user_id: "alice", user_info: { name: "second" } });
  await clusterBarrier(cluster.nodes, channel, [observer]);

  const added = observer.received(channel, "pusher_internal:member_added").filter((data) => data.user_id === "alice");
  assert.deepEqual(added, [{ user_id: "alice", user_info: { name: "first" } }]);
  // One table, so a failure shows what every node reported.
  const reported = {};
  const expected = {};
  for (const [index, node] of cluster.nodes.entries()) {
    const late = await connectRawTo(node.port, clients);
    const succeeded = await late.subscribePresence(channel, { user_id: `late-${index}` });
    reported[`node ${index + 1}`] = decodeData(succeeded).presence.hash.alice;
    expected[`node ${index + 1}`] = { name: "first" };
  }
  assert.deepEqual(reported, expected, "alice's user_info in subscription_succeeded on each node");
});

// The limit of 100 distinct users per presence channel counts the users on every node.
test("presence member limit is cluster-wide", async (t) => {
  const clients = new Set();
  t.after(() => closeAll(clients));
  const [nodeA, nodeB, nodeC] = cluster.nodes;
  const channel = uniqueName("presence-full-");
  const maxMembers = 100;

  // 49 users on node 1, 50 on node 2 and the observer on node 3 fill the channel.
  const observerClient = await connectRawTo(nodeC.port, clients);
  await observerClient.subscribePresence(channel, { user_id: "observer" });
  for (let index = 0; index < maxMembers - 1; index += 1) {
    const node = index < 49 ? nodeA : nodeB;
    const client = await connectRawTo(node.port, clients);
    await client.subscribePresence(channel, { user_id: `user-${index}` });
  }
  await clusterBarrier(cluster.nodes, channel, [new RawRecorder(observerClient, "observer on node 3")]);
  for (const port of everyApiPort()) {
    const info = await apiGet(port, `/channels/${channel}`, { info: "user_count" });
    assert.equal(info.user_count, maxMembers, `user_count on port ${port}`);
  }

  // A new user is rejected on every node.
  for (const [index, node] of cluster.nodes.entries()) {
    const client = await connectRawTo(node.port, clients);
    const channelData = JSON.stringify({ user_id: `one-too-many-${index}` });
    const since = client.mark();
    client.sendSubscribe(channel, { auth: channelAuth(client.socketId, channel, channelData), channelData });
    const rejected = await client.waitForEvent("pusher:subscription_error", { since, channel });
    assert.equal(rejected.json.data.type, "LimitReached", `node ${index + 1}: ${rejected.text}`);
  }

  // A user who is already a member may add a socket on another node.
  const again = await connectRawTo(nodeC.port, clients);
  const succeeded = await again.subscribePresence(channel, { user_id: "user-0" });
  assert.equal(decodeData(succeeded).presence.count, maxMembers);
});

test("client events cross nodes and skip the sender", async (t) => {
  const clients = new Set();
  t.after(() => closeAll(clients));
  const [nodeA, nodeB, nodeC] = cluster.nodes;
  const channel = uniqueName("private-chat-");

  const raws = [];
  for (const [label, node] of [
    ["sender on node 1", nodeA],
    ["peer on node 1", nodeA],
    ["peer on node 2", nodeB],
    ["peer on node 3", nodeC],
  ]) {
    const client = await connectRawTo(node.port, clients);
    await client.subscribePrivate(channel);
    raws.push(new RawRecorder(client, label));
  }
  const [sender, ...peers] = raws;
  const pusher = pusherJsClient(haproxy.port, { clients });
  const pusherRecorder = new PusherRecorder(pusher, "pusher-js via HAProxy");
  const pusherChannel = await pusherRecorder.subscribe(channel);

  const rawId = randomId();
  sender.client.send({ event: "client-note", channel, data: { id: rawId } });
  const pusherId = randomId();
  assert.equal(pusherChannel.trigger("client-note", { id: pusherId }), true);

  for (const recorder of [...peers, pusherRecorder]) {
    await waitForId(recorder, channel, "client-note", rawId);
  }
  for (const recorder of raws) {
    await waitForId(recorder, channel, "client-note", pusherId);
  }
  await clusterBarrier(cluster.nodes, channel, [...raws, pusherRecorder]);

  for (const recorder of [...peers, pusherRecorder]) {
    assert.equal(countId(recorder, channel, "client-note", rawId), 1, `${recorder.label} received the raw client's event`);
  }
  assert.equal(countId(sender, channel, "client-note", rawId), 0, "the sender received its own client event");
  for (const recorder of raws) {
    assert.equal(countId(recorder, channel, "client-note", pusherId), 1, `${recorder.label} received pusher-js's event`);
  }
  assert.equal(countId(pusherRecorder, channel, "client-note", pusherId), 0, "pusher-js received its own client event");
  for (const recorder of raws) {
    assert.equal(recorder.client.events("pusher:error").length, 0, `${recorder.label}: ${recorder.client.describeMessages()}`);
  }
});

test("presence client event carries user_id", async (t) => {
  const clients = new Set();
  t.after(() => closeAll(clients));
  const [nodeA, , nodeC] = cluster.nodes;
  const channel = uniqueName("presence-chat-");

  const writer = await connectRawTo(nodeA.port, clients);
  await writer.subscribePresence(channel, { user_id: "writer" });
  const reader = await connectRawTo(nodeC.port, clients);
  await reader.subscribePresence(channel, { user_id: "reader" });

  const id = randomId();
  // The user_id the sender puts in the frame must be replaced by its member id.
  writer.send({ event: "client-typing", channel, data: { id }, user_id: "forged" });
  const received = await reader.waitForEvent("client-typing", { channel });

  assert.equal(received.json.user_id, "writer");
  assert.deepEqual(received.json.data, { id });
});

test("socket_id excludes one socket on any node", async (t) => {
  const clients = new Set();
  t.after(() => closeAll(clients));
  const [nodeA, nodeB, nodeC] = cluster.nodes;
  const channel = uniqueName("exclude-");

  const raws = [];
  for (const [label, node] of [
    ["excluded on node 1", nodeA],
    ["kept on node 1", nodeA],
    ["kept on node 2", nodeB],
    ["excluded on node 3", nodeC],
  ]) {
    const client = await connectRawTo(node.port, clients);
    await client.subscribe(channel);
    raws.push(new RawRecorder(client, label));
  }
  const pusher = pusherJsClient(haproxy.port, { clients });
  const pusherRecorder = new PusherRecorder(pusher, "pusher-js via HAProxy");
  await pusherRecorder.subscribe(channel);
  const everyone = [...raws, pusherRecorder];
  const [excludedOnA, , , excludedOnC] = raws;

  // Each case: the API to send through, the socket to leave out, and an event id.
  const cases = [
    { port: nodeB.port, excluded: excludedOnA, via: "node 2" },
    { port: haproxy.port, excluded: pusherRecorder, via: "HAProxy" },
    { port: nodeC.port, excluded: excludedOnC, via: "node 3, its own socket" },
    { port: nodeA.port, excluded: excludedOnC, via: "node 1" },
  ];
  for (const entry of cases) {
    entry.id = randomId();
    entry.socketId = entry.excluded === pusherRecorder ? pusher.connection.socket_id : entry.excluded.client.socketId;
    const response = await apiClient(entry.port).trigger(channel, "excluding", { id: entry.id }, { socket_id: entry.socketId });
    assert.equal(response.status, 200);
  }
  const batchId = randomId();
  await apiClient(haproxy.port).triggerBatch([
    { channel, name: "excluding", data: { id: batchId }, socket_id: excludedOnA.client.socketId },
  ]);
  cases.push({ id: batchId, excluded: excludedOnA, via: "HAProxy, batch" });

  for (const entry of cases) {
    for (const recorder of everyone) {
      if (recorder !== entry.excluded) {
        await waitForId(recorder, channel, "excluding", entry.id);
      }
    }
  }
  await clusterBarrier(cluster.nodes, channel, everyone);
  for (const entry of cases) {
    for (const recorder of everyone) {
      const expected = recorder === entry.excluded ? 0 : 1;
      assert.equal(
        countId(recorder, channel, "excluding", entry.id),
        expected,
        `${recorder.label}, event sent through ${entry.via} excluding ${entry.excluded.label}`,
      );
    }
  }
});

test("API counts are cluster totals on every node", async (t) => {
  const clients = new Set();
  t.after(() => closeAll(clients));
  const [nodeA, nodeB, nodeC] = cluster.nodes;
  const token = randomId();
  const publicChannel = `count-${token}`;
  const presenceChannel = `presence-count-${token}`;
  const privateChannel = `private-count-${token}`;

  // Public: 2 sockets on node 1, 1 on node 2, 1 on node 3.
  const publicSockets = [];
  for (const node of [nodeA, nodeA, nodeB, nodeC]) {
    const client = await connectRawTo(node.port, clients);
    await client.subscribe(publicChannel);
    publicSockets.push(client);
  }
  const publicRecorders = publicSockets.map((client, index) => new RawRecorder(client, `public socket ${index}`));
  // Presence: u1 on nodes 1 and 3, u2 on node 2, u3 through HAProxy.
  const presenceSockets = [];
  for (const [node, userId] of [
    [nodeA, "u1"],
    [nodeC, "u1"],
    [nodeB, "u2"],
  ]) {
    const client = await connectRawTo(node.port, clients);
    await client.subscribePresence(presenceChannel, { user_id: userId });
    presenceSockets.push(client);
  }
  const pusher = pusherJsClient(haproxy.port, { presenceData: { user_id: "u3" }, clients });
  await new PusherRecorder(pusher, "pusher-js u3").subscribe(presenceChannel);
  // Private: 1 socket on node 3.
  const privateSocket = await connectRawTo(nodeC.port, clients);
  await privateSocket.subscribePrivate(privateChannel);

  // The public channel has a socket on every node, so its barrier covers every node's view.
  await clusterBarrier(cluster.nodes, publicChannel, publicRecorders);
  for (const port of everyApiPort()) {
    const where = `on port ${port}`;
    assert.deepEqual(await apiGet(port, `/channels/${publicChannel}`, { info: "subscription_count" }), {
      occupied: true,
      subscription_count: 4,
    }, where);
    assert.deepEqual(await apiGet(port, `/channels/${presenceChannel}`, { info: "user_count,subscription_count" }), {
      occupied: true,
      user_count: 3,
      subscription_count: 4,
    }, where);
    assert.deepEqual(await apiGet(port, `/channels/${privateChannel}`, { info: "subscription_count" }), {
      occupied: true,
      subscription_count: 1,
    }, where);
    assert.deepEqual(await usersOn(port, presenceChannel), ["u1", "u2", "u3"], where);
    assert.deepEqual(
      await apiGet(port, "/channels", { filter_by_prefix: presenceChannel, info: "user_count,subscription_count" }),
      { channels: { [presenceChannel]: { user_count: 3, subscription_count: 4 } } },
      where,
    );
    const all = await apiGet(port, "/channels", { info: "subscription_count" });
    assert.deepEqual(all.channels[publicChannel], { subscription_count: 4 }, where);
    assert.deepEqual(all.channels[presenceChannel], { subscription_count: 4 }, where);
    assert.deepEqual(all.channels[privateChannel], { subscription_count: 1 }, where);
    const plain = await apiGet(port, "/channels", { filter_by_prefix: `private-count-${token}` });
    assert.deepEqual(plain, { channels: { [privateChannel]: {} } }, where);

    const triggered = await apiClient(port).trigger([publicChannel, presenceChannel], "counted", { id: randomId() }, {
      info: "user_count,subscription_count",
    });
    assert.deepEqual(await triggered.json(), {
      channels: {
        [publicChannel]: { subscription_count: 4 },
        [presenceChannel]: { user_count: 3, subscription_count: 4 },
      },
    }, where);
  }

  // u1 leaves node 1 but stays on node 3. One public socket on node 1 leaves, and the private
  // channel empties.
  presenceSockets[0].close();
  publicSockets[0].close();
  privateSocket.close();
  await waitForSubscriptionCount(nodeA, presenceChannel, 3);
  await waitForSubscriptionCount(nodeA, publicChannel, 3);
  await waitForSubscriptionCount(nodeC, privateChannel, 0);
  await clusterBarrier(cluster.nodes, publicChannel, publicRecorders.slice(1));
  for (const port of everyApiPort()) {
    const where = `on port ${port}, after the closes`;
    assert.deepEqual(await apiGet(port, `/channels/${publicChannel}`, { info: "subscription_count" }), {
      occupied: true,
      subscription_count: 3,
    }, where);
    assert.deepEqual(await apiGet(port, `/channels/${presenceChannel}`, { info: "user_count,subscription_count" }), {
      occupied: true,
      user_count: 3,
      subscription_count: 3,
    }, where);
    assert.deepEqual(await apiGet(port, `/channels/${privateChannel}`, { info: "subscription_count" }), {
      occupied: false,
      subscription_count: 0,
    }, where);
    assert.deepEqual(await usersOn(port, presenceChannel), ["u1", "u2", "u3"], where);
    const all = await apiGet(port, "/channels");
    assert.equal(all.channels[privateChannel], undefined, `${where}: ${JSON.stringify(all)}`);
  }
});

// Runs last: it stops node 3.
test("stopped node's clients move over", async (t) => {
  const clients = new Set();
  t.after(() => closeAll(clients));
  const channel = uniqueName("presence-failover-");
  const stopped = cluster.nodes[2];
  const remaining = cluster.nodes.slice(0, 2);

  const users = [];
  for (let index = 0; index < NODE_COUNT; index += 1) {
    const client = pusherJsClient(haproxy.port, { presenceData: { user_id: `user-${index}` }, clients });
    const recorder = new PusherRecorder(client, `pusher-js user-${index}`);
    const channelObject = await recorder.subscribe(channel);
    users.push({ client, recorder, channelObject, node: await nodeOf(client.connection.socket_id) });
  }
  const moving = users.find((user) => user.node === 2);
  assert.ok(moving, `no pusher-js client landed on node 3: ${users.map((user) => user.node).join(", ")}`);
  const oldSocketId = moving.client.connection.socket_id;
  // pusher-js reports a 4200 several times: for the pusher:error frame, the close frame and
  // the WebSocket close.
  const errorCodes = [];
  moving.client.connection.bind("error", (error) => errorCodes.push(error?.data?.code ?? error?.error?.data?.code));

  stopped.signal("SIGTERM");
  await waitFor(() => stopped.exitStatus !== null, 10_000, "node 3 to exit after SIGTERM");
  assert.deepEqual(stopped.exitStatus, { code: 0, signal: null });

  await waitFor(
    () => moving.client.connection.state === "connected" && moving.client.connection.socket_id !== oldSocketId,
    10_000,
    `the pusher-js client of node 3 to reconnect (state ${moving.client.connection.state})`,
  );
  assert.ok(errorCodes.length > 0, "pusher-js reported no error before reconnecting");
  assert.deepEqual(new Set(errorCodes), new Set([4200]), `error codes: ${errorCodes.join(", ")}`);
  const newNode = await nodeOf(moving.client.connection.socket_id);
  assert.notEqual(newNode, 2);
  await waitFor(() => moving.channelObject.subscribed, 5_000, "pusher-js to subscribe again after reconnecting");

  const expectedUsers = users.map((_, index) => `user-${index}`);
  for (const node of remaining) {
    await waitFor(
      async () => JSON.stringify(await usersOn(node.port, channel)) === JSON.stringify(expectedUsers),
      5_000,
      `node on port ${node.port} to list ${expectedUsers.join(", ")}`,
    );
  }
  for (const user of users) {
    await waitFor(() => user.channelObject.members.count === NODE_COUNT, 5_000, `${user.recorder.label} to see every member`);
  }

  const servers = await waitFor(
    async () => {
      const rows = await haproxy.servers();
      return rows.crier3.status.startsWith("DOWN") ? rows : undefined;
    },
    MARKED_DOWN_WITHIN_MS,
    "HAProxy to mark crier3 down",
  );
  assert.equal(servers.crier1.status, "UP");
  assert.equal(servers.crier2.status, "UP");
});
