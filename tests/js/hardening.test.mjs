// Hostile input that must not grow the server's memory or hold its sockets: an endless
// request line, a presence roster requested again and again by a client that never reads,
// raw HTTP that async-h1 cannot parse, and WebSocket protocol violations.

import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import { test } from "node:test";

import { channelAuth, sleep, uniqueName, useCrier, waitFor } from "./harness.mjs";

const crier = useCrier();

/** Returns the server's resident memory in KiB, read from /proc. */
function rssKib(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]);
}

/** Sends `text` on a new TCP connection and resolves with everything received until close. */
function rawExchange(port, text, timeoutMs = 5_000) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    const chunks = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no close within ${timeoutMs} ms; received ${JSON.stringify(Buffer.concat(chunks).toString())}`));
    }, timeoutMs);
    socket.on("connect", () => socket.write(text));
    socket.on("data", (chunk) => chunks.push(chunk));
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString("utf8"));
    });
  });
}

test("request line without end is cut off with bounded memory", async () => {
  const before = rssKib(crier.server.pid);
  const socket = net.connect(crier.server.apiPort, "127.0.0.1");
  socket.on("error", () => {});
  await new Promise((resolve) => socket.on("connect", resolve));
  // The head peeked for HTTP/1.0 checks is complete, so async-h1 reads what follows it.
  socket.write(`GET /apps/${crier.server.app.id}/channels HTTP/1.1\r\nHost: crier\r\nX-Pad: `);
  const chunk = "a".repeat(64 * 1024);
  let sent = 0;
  let closed = false;
  socket.on("close", () => {
    closed = true;
  });
  // 64 MiB at most; the server must close long before.
  while (!closed && sent < 64 * 1024 * 1024) {
    if (!socket.write(chunk)) {
      await Promise.race([new Promise((resolve) => socket.once("drain", resolve)), sleep(200)]);
    }
    sent += chunk.length;
  }
  await waitFor(() => closed, 5_000, "server to close the connection");
  const grown = rssKib(crier.server.pid) - before;
  assert.ok(grown < 16 * 1024, `RSS grew by ${grown} KiB after ${sent} bytes`);
});

test("duplicate presence subscribes from a client that never reads get 4100", async () => {
  const channel = uniqueName("presence-big");
  const info = { pad: "x".repeat(900) };
  const members = [];
  for (let index = 0; index < 20; index += 1) {
    members.push(await crier.server.presenceRaw(channel, { user_id: `u${index}`, user_info: info }));
  }
  const attacker = members[0];
  attacker.ws._socket.pause();
  const channelData = JSON.stringify({ user_id: "u0", user_info: info });
  const frame = JSON.stringify({
    event: "pusher:subscribe",
    data: { channel, auth: channelAuth(attacker.socketId, channel, channelData), channel_data: channelData },
  });
  // The reply to each duplicate is the whole roster (about 19 KB), so 400 of them pass the
  // per-connection byte limit of 1 MiB long before the 1024-frame limit.
  for (let index = 0; index < 400; index += 1) {
    attacker.ws.send(frame);
  }
  await sleep(1_000);
  attacker.ws._socket.resume();
  await waitFor(() => attacker.closeEvent !== null, 10_000, "the reader-less client to be closed");
  assert.equal(attacker.closeEvent.code, 4100);
  // Other members keep working.
  await members[1].roundTrip();
  assert.equal(members[1].closeEvent, null);
});

for (const [label, request, status] of [
  ["HTTP/1.0", "GET /apps/1/channels HTTP/1.0\r\n\r\n", 505],
  ["missing Host", "GET /apps/1/channels HTTP/1.1\r\nConnection: close\r\n\r\n", 400],
  ["unknown method", "FOO /apps/1/channels HTTP/1.1\r\nHost: crier\r\n\r\n", 501],
  ["Content-Length with Transfer-Encoding", "POST /apps/1/events HTTP/1.1\r\nHost: crier\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}", 400],
  ["negative Content-Length", "POST /apps/1/events HTTP/1.1\r\nHost: crier\r\nContent-Length: -1\r\n\r\n", 400],
  ["head over 8 KiB", `GET /apps/1/channels?x=${"a".repeat(9000)} HTTP/1.1\r\nHost: crier\r\n\r\n`, 431],
]) {
  test(`${label} gets ${status} with a JSON error`, async () => {
    const reply = await rawExchange(crier.server.apiPort, request);
    assert.match(reply, new RegExp(`^HTTP/1\\.1 ${status} `), `reply: ${JSON.stringify(reply)}`);
    const body = JSON.parse(reply.slice(reply.indexOf("\r\n\r\n") + 4));
    assert.equal(typeof body.error, "string");
  });
}

test("invalid UTF-8 text frame gets close 1007", async () => {
  const client = await crier.server.connectRaw();
  // A text frame whose payload is not UTF-8, masked as a client must: FIN + text, length 2.
  const mask = Buffer.from([1, 2, 3, 4]);
  const payload = Buffer.from([0xff, 0xfe]).map((byte, index) => byte ^ mask[index % 4]);
  client.ws._socket.write(Buffer.concat([Buffer.from([0x81, 0x82]), mask, payload]));
  await waitFor(() => client.closeEvent !== null, 5_000, "close after invalid UTF-8");
  assert.equal(client.closeEvent.code, 1007);
});
