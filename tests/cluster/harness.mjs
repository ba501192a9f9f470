// Harness for the cluster-mode tests: starts a private redis-server, crier nodes that share it,
// and HAProxy in front of them, all on free loopback ports, and stops each by its pid.
//
// It builds on ../js/harness.mjs (startCrier, RawClient, waitFor and friends) and adds what a
// cluster needs: the extra processes, recorders that count every event a client received,
// and barriers that cover every node.

import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";

import {
  APP,
  DEFAULT_QUERY,
  DEFAULT_WAIT_MS,
  PusherJs,
  PusherServer,
  RawClient,
  REPO_ROOT,
  startCrier,
  uniqueName,
  waitFor,
  withTimeout,
} from "../js/harness.mjs";

export const HAPROXY_TEMPLATE = path.join(REPO_ROOT, "examples", "haproxy.cfg");

// The core logs this line once the node's Redis subscription is confirmed.
const CLUSTER_CONNECTED = /cluster connected: node=/;

const REDIS_READY = /Ready to accept connections/;
const REDIS_START_TIMEOUT_MS = 10_000;
const NODE_CONNECT_TIMEOUT_MS = 15_000;
const HAPROXY_START_TIMEOUT_MS = 10_000;
const PROCESS_STOP_TIMEOUT_MS = 10_000;
// Output lines kept per helper process, for failure messages.
const OUTPUT_LINES_KEPT = 400;

// Every helper process started here. The exit handler kills those that are still running.
const runningPids = new Set();
process.on("exit", () => {
  for (const pid of runningPids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // The process is already gone.
    }
  }
});

/** Returns a TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * A child process (redis-server or haproxy) whose stdout and stderr lines are kept in memory.
 * `spawnError` resolves with an Error, naming the Debian package to install when the
 * executable is missing, if the process cannot be started.
 */
class HelperProcess {
  constructor(executable, argv, debianPackage) {
    this.executable = executable;
    this.argv = argv;
    this.lines = [];
    this.exitStatus = null;
    this.child = spawn(executable, argv, { stdio: ["ignore", "pipe", "pipe"] });
    this.pid = this.child.pid;
    if (this.pid !== undefined) {
      runningPids.add(this.pid);
    }
    this.exited = new Promise((resolve) => {
      this.child.on("exit", (code, signal) => {
        runningPids.delete(this.pid);
        this.exitStatus = { code, signal };
        resolve(this.exitStatus);
      });
    });
    this.spawnError = new Promise((resolve) => {
      this.child.on("error", (error) => {
        const message =
          error.code === "ENOENT"
            ? `${executable} not found in PATH: install it with \`apt-get install -y ${debianPackage}\``
            : `failed to start ${executable}: ${error.message}`;
        this.exitStatus = { code: null, signal: null, error: message };
        resolve(new Error(message));
      });
    });
    for (const stream of [this.child.stdout, this.child.stderr]) {
      let pending = "";
      stream.setEncoding("utf8");
      stream.on("data", (chunk) => {
        pending += chunk;
        const lines = pending.split("\n");
        pending = lines.pop();
        this.lines.push(...lines);
        if (this.lines.length > OUTPUT_LINES_KEPT) {
          this.lines.splice(0, this.lines.length - OUTPUT_LINES_KEPT);
        }
      });
    }
  }

  outputText() {
    return this.lines.join("\n");
  }

  /** Waits for an output line matching `pattern`; fails early when the process exits. */
  async waitForLine(pattern, timeoutMs, description) {
    const found = waitFor(
      () => {
        const line = this.lines.find((candidate) => pattern.test(candidate));
        if (line) {
          return line;
        }
        if (this.exitStatus !== null) {
          throw new Error(
            `${this.executable} exited (${JSON.stringify(this.exitStatus)}) before ${description}; output:\n${this.outputText()}`,
          );
        }
        return undefined;
      },
      timeoutMs,
      `${description} from ${this.executable} ${this.argv.join(" ")}`,
    );
    const failed = this.spawnError.then((error) => {
      throw error;
    });
    return Promise.race([found, failed]);
  }

  /** Sends `signal` by pid, then SIGKILL when the process is still running after 10 s. */
  async stop(signal = "SIGTERM") {
    if (this.exitStatus !== null) {
      return this.exitStatus;
    }
    this.signal(signal);
    try {
      return await withTimeout(this.exited, PROCESS_STOP_TIMEOUT_MS, `${this.executable} pid ${this.pid} to exit`);
    } catch {
      this.signal("SIGKILL");
      return withTimeout(this.exited, PROCESS_STOP_TIMEOUT_MS, `${this.executable} pid ${this.pid} to exit after SIGKILL`);
    }
  }

  signal(name) {
    try {
      process.kill(this.pid, name);
    } catch (error) {
      if (error.code !== "ESRCH") {
        throw error;
      }
    }
  }
}

/**
 * A redis-server on 127.0.0.1 without persistence. `stop()` and `start()` may alternate, and
 * every start uses the same port, so crier nodes can reconnect to it.
 */
export class RedisServer {
  constructor(port) {
    this.port = port;
    this.url = `redis://127.0.0.1:${port}/0`;
    this.process = null;
  }

  async start() {
    if (this.process && this.process.exitStatus === null) {
      throw new Error(`redis-server on port ${this.port} is already running (pid ${this.process.pid})`);
    }
    this.process = new HelperProcess(
      "redis-server",
      ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      "redis-server",
    );
    await this.process.waitForLine(REDIS_READY, REDIS_START_TIMEOUT_MS, "'Ready to accept connections'");
  }

  /** Stops redis-server by its pid; SIGTERM closes every client connection first. */
  async stop() {
    if (this.process) {
      await this.process.stop("SIGTERM");
    }
  }
}

/** Starts redis-server on a free port and returns it once it accepts connections. */
export async function startRedis() {
  const redis = new RedisServer(await freePort());
  await redis.start();
  return redis;
}

/**
 * Starts one crier node in cluster mode with WebSocket and HTTP API on one port, and resolves
 * once it reports its Redis subscription. `port` is set on the returned CrierServer.
 */
export async function startNode(redis, { nodeTimeout, extraArgs = [] } = {}) {
  const clusterArgs = ["--redis_address", redis.url];
  if (nodeTimeout !== undefined) {
    clusterArgs.push("--node_timeout", String(nodeTimeout));
  }
  const node = await startCrier({ singleListener: true, extraArgs: [...clusterArgs, ...extraArgs] });
  try {
    await waitForLog(node, CLUSTER_CONNECTED, NODE_CONNECT_TIMEOUT_MS);
  } catch (error) {
    await node.stop();
    throw error;
  }
  node.port = node.wsPort;
  return node;
}

/** Waits until crier's stderr has a line matching `pattern` at index >= `since`. */
export function waitForLog(node, pattern, timeoutMs = DEFAULT_WAIT_MS, { since = 0 } = {}) {
  return waitFor(
    () => {
      const line = node.stderrLines.slice(since).find((candidate) => pattern.test(candidate));
      if (line) {
        return line;
      }
      if (node.exitStatus !== null) {
        throw new Error(
          `crier pid ${node.pid} exited (${JSON.stringify(node.exitStatus)}) while waiting for ${pattern}; stderr:\n${node.stderrText()}`,
        );
      }
      return undefined;
    },
    timeoutMs,
    `a crier log line matching ${pattern}; stderr so far:\n${node.stderrText()}`,
  );
}

export function logLines(node, pattern) {
  return node.stderrLines.filter((line) => pattern.test(line));
}

/**
 * Starts redis-server and `count` nodes, and waits until every node lists the subscriptions of
 * every other node. Returns {redis, nodes, stop}, where stop() ends them all.
 */
export async function startCluster({ count, nodeTimeout, extraArgs } = {}) {
  const cluster = { redis: null, nodes: [] };
  cluster.stop = () => stopCluster(cluster);
  try {
    cluster.redis = await startRedis();
    for (let index = 0; index < count; index += 1) {
      cluster.nodes.push(await startNode(cluster.redis, { nodeTimeout, extraArgs }));
    }
    await waitForConvergence(cluster.nodes);
  } catch (error) {
    await cluster.stop();
    throw error;
  }
  return cluster;
}

/** Stops every node (SIGTERM, then SIGKILL), then redis-server. Throws on a node that hung. */
export async function stopCluster({ redis, nodes }) {
  const problems = [];
  for (const node of nodes) {
    const status = await node.stop();
    if (status.killed) {
      problems.push(`crier pid ${node.pid} needed SIGKILL; stderr:\n${node.stderrText()}`);
    }
  }
  if (redis) {
    await redis.stop();
  }
  if (problems.length > 0) {
    throw new Error(problems.join("\n"));
  }
}

/**
 * Subscribes one probe socket per node to its own public channel and waits until the HTTP API
 * of every node lists every probe channel, which shows that each node receives the others'
 * messages. Then closes the probes and waits until no node lists them any more.
 */
export async function waitForConvergence(nodes, timeoutMs = NODE_CONNECT_TIMEOUT_MS) {
  const prefix = uniqueName("converge-");
  const probes = [];
  for (const [index, node] of nodes.entries()) {
    probes.push(await node.subscribedRaw(`${prefix}-${index}`));
  }
  const expected = nodes.map((_, index) => `${prefix}-${index}`).sort();
  const listedEverywhere = async (names) => {
    for (const node of nodes) {
      const listed = Object.keys(await channelsWithPrefix(node, prefix)).sort();
      if (JSON.stringify(listed) !== JSON.stringify(names)) {
        return false;
      }
    }
    return true;
  };
  await waitFor(() => listedEverywhere(expected), timeoutMs, `every node to list ${expected.join(", ")}`);
  for (const probe of probes) {
    await probe.closeGracefully();
  }
  await waitFor(() => listedEverywhere([]), timeoutMs, `every node to drop the ${prefix} probe channels`);
}

async function channelsWithPrefix(node, prefix) {
  const response = await node.request({
    path: `/apps/${node.app.id}/channels`,
    query: { filter_by_prefix: prefix },
  });
  if (response.status !== 200) {
    throw new Error(`GET channels from port ${node.port} failed with HTTP ${response.status}: ${response.text}`);
  }
  return response.json.channels;
}

// HTTP connections of the pusher library are not kept alive, so none outlives a test.
const apiAgent = new http.Agent({ keepAlive: false });

/** Returns a client of the `pusher` Node library for the HTTP API on `port`. */
export function apiClient(port, app = APP) {
  return new PusherServer({
    appId: app.id,
    key: app.key,
    secret: app.secret,
    host: "127.0.0.1",
    port: String(port),
    useTLS: false,
    timeout: DEFAULT_WAIT_MS,
    agent: apiAgent,
  });
}

/** Sends a signed GET through the pusher library and returns the parsed JSON body. */
export async function apiGet(port, requestPath, params = {}) {
  const response = await apiClient(port).get({ path: requestPath, params });
  const text = await response.text();
  if (response.status !== 200) {
    throw new Error(`GET ${requestPath} on port ${port} returned HTTP ${response.status}: ${text}`);
  }
  return JSON.parse(text);
}

/** Opens a raw `ws` client to `port` and waits for pusher:connection_established. */
export async function connectRawTo(port, clients) {
  const client = new RawClient(`ws://127.0.0.1:${port}/app/${APP.key}?${DEFAULT_QUERY}`);
  clients?.add(client);
  await client.opened();
  const established = await client.waitForEvent("pusher:connection_established");
  client.socketId = JSON.parse(established.json.data).socket_id;
  return client;
}

/**
 * Records what a pusher-js client received on its channels, so tests can count each event.
 * `entries` contains {channel, event, data} in arrival order.
 */
export class PusherRecorder {
  constructor(client, label) {
    this.client = client;
    this.label = label;
    this.entries = [];
  }

  /** Subscribes to `channel`, records every event on it, and waits for subscription_succeeded. */
  async subscribe(channelName, timeoutMs = DEFAULT_WAIT_MS) {
    const channel = this.client.subscribe(channelName);
    channel.bind_global((event, data) => {
      this.entries.push({ channel: channelName, event, data });
    });
    await waitFor(
      () => {
        const failure = this.entries.find(
          (entry) => entry.channel === channelName && entry.event === "pusher:subscription_error",
        );
        if (failure) {
          throw new Error(`${this.label}: subscription to ${channelName} failed: ${JSON.stringify(failure.data)}`);
        }
        return channel.subscribed;
      },
      timeoutMs,
      `${this.label} to subscribe to ${channelName}`,
    );
    return channel;
  }

  received(channel, event) {
    return this.entries.filter((entry) => entry.channel === channel && entry.event === event).map((entry) => entry.data);
  }
}

/** Adapts a RawClient to the same received(channel, event) view as PusherRecorder. */
export class RawRecorder {
  constructor(client, label) {
    this.client = client;
    this.label = label;
  }

  received(channel, event) {
    return this.client.messages
      .filter((message) => message.json?.event === event && message.json.channel === channel)
      .map((message) => {
        const data = message.json.data;
        if (typeof data !== "string") {
          return data;
        }
        try {
          return JSON.parse(data);
        } catch {
          return data;
        }
      });
  }
}

/** Counts the events named `event` on `channel` whose data has `id`. */
export function countId(recorder, channel, event, id) {
  return recorder.received(channel, event).filter((data) => data?.id === id).length;
}

/** Waits until `recorder` received an event named `event` on `channel` with data.id `id`. */
export function waitForId(recorder, channel, event, id, timeoutMs = DEFAULT_WAIT_MS) {
  return waitFor(
    () => countId(recorder, channel, event, id) > 0,
    timeoutMs,
    `${recorder.label} to receive ${event} ${id} on ${channel}`,
  );
}

/**
 * Triggers one marker event through the HTTP API of every node and waits until every recorder
 * received all of them. A node relays its messages to each other node in the order it
 * published them, so whatever a node published before its marker (events, joins, leaves,
 * counts) has been applied everywhere once its marker arrived.
 */
export async function clusterBarrier(nodes, channel, recorders, timeoutMs = DEFAULT_WAIT_MS) {
  const ids = [];
  for (const node of nodes) {
    const id = uniqueName("barrier-");
    ids.push(id);
    await apiClient(node.port).trigger(channel, "barrier", { id });
  }
  for (const recorder of recorders) {
    for (const id of ids) {
      await waitForId(recorder, channel, "barrier", id, timeoutMs);
    }
  }
}

/** Creates a pusher-js client for `port` whose subscriptions are signed locally. */
export function pusherJsClient(port, { presenceData, clients } = {}) {
  const signer = apiClient(port);
  const customHandler = (params, callback) => {
    try {
      if (params.channelName.startsWith("presence-")) {
        callback(null, signer.authorizeChannel(params.socketId, params.channelName, presenceData));
      } else {
        callback(null, signer.authorizeChannel(params.socketId, params.channelName));
      }
    } catch (error) {
      callback(error, null);
    }
  };
  const client = new PusherJs(APP.key, {
    cluster: "crier-test",
    wsHost: "127.0.0.1",
    wsPort: port,
    forceTLS: false,
    enabledTransports: ["ws"],
    enableStats: false,
    channelAuthorization: { customHandler },
  });
  clients?.add({ close: () => client.disconnect() });
  return client;
}

/** Closes every client in `clients` (raw or pusher-js) and empties the set. */
export function closeAll(clients) {
  for (const client of clients) {
    try {
      client.close();
    } catch {
      // A client that never opened has nothing to close.
    }
  }
  clients.clear();
}

/**
 * HAProxy started from examples/haproxy.cfg with the test's ports, plus a stats socket that
 * shows each server's state and open sessions.
 */
export class Haproxy {
  constructor({ process, port, socketPath, directory, serverNames }) {
    this.process = process;
    this.port = port;
    this.socketPath = socketPath;
    this.directory = directory;
    this.serverNames = serverNames;
  }

  /** Returns the rows of `show stat` for the crier backend's servers, keyed by server name. */
  async servers() {
    const text = await statsCommand(this.socketPath, "show stat");
    const lines = text.split("\n").filter((line) => line.length > 0);
    const header = lines[0].replace(/^# /, "").split(",");
    const rows = {};
    for (const line of lines.slice(1)) {
      const values = line.split(",");
      const row = Object.fromEntries(header.map((name, index) => [name, values[index]]));
      if (row.pxname === "crier" && this.serverNames.includes(row.svname)) {
        rows[row.svname] = row;
      }
    }
    return rows;
  }

  /** Returns the number of open sessions per server name. */
  async sessions() {
    const servers = await this.servers();
    return Object.fromEntries(Object.entries(servers).map(([name, row]) => [name, Number(row.scur)]));
  }

  async stop() {
    const status = await this.process.stop("SIGTERM");
    fs.rmSync(this.directory, { recursive: true, force: true });
    return status;
  }
}

function statsCommand(socketPath, command) {
  const reply = new Promise((resolve, reject) => {
    const socket = net.createConnection(socketPath);
    const chunks = [];
    socket.on("connect", () => socket.end(`${command}\n`));
    socket.on("data", (chunk) => chunks.push(chunk));
    socket.on("error", reject);
    socket.on("close", () => resolve(Buffer.concat(chunks).toString("utf8")));
  });
  return withTimeout(reply, DEFAULT_WAIT_MS, `HAProxy stats command "${command}"`);
}

/**
 * Writes a config made from examples/haproxy.cfg: the frontend on `port`, one server line per
 * node (keeping the template's server options), the test app id in the health check, and a
 * stats socket. Throws when the template no longer has the lines this relies on.
 */
export function haproxyConfig(template, { port, nodes, socketPath, appId }) {
  const replaceOnce = (text, pattern, replacement, what) => {
    const matches = text.match(new RegExp(pattern.source, `${pattern.flags.replace("g", "")}g`));
    if (!matches || matches.length !== 1) {
      throw new Error(`examples/haproxy.cfg must have exactly one ${what} (pattern ${pattern}), found ${matches?.length ?? 0}`);
    }
    return text.replace(pattern, replacement);
  };
  let config = template;
  config = replaceOnce(config, /^global$/m, `global\n    stats socket ${socketPath} mode 600 level admin`, "`global` line");
  config = replaceOnce(config, /^(\s*bind )\S+$/m, `$1127.0.0.1:${port}`, "bind line");
  config = replaceOnce(config, /(uri \/apps\/)[^/\s]+(\/channels)/, `$1${appId}$2`, "health check uri");

  const serverLine = /^(\s*)server (\S+) (\S+)(.*)$/gm;
  const templateServers = [...config.matchAll(serverLine)];
  if (templateServers.length === 0) {
    throw new Error("examples/haproxy.cfg has no `server` line");
  }
  const [, indent, , , options] = templateServers[0];
  const names = nodes.map((_, index) => `crier${index + 1}`);
  const generated = nodes.map((node, index) => `${indent}server ${names[index]} 127.0.0.1:${node.port}${options}`);
  const firstIndex = templateServers[0].index;
  config = config.replace(serverLine, "");
  config = `${config.slice(0, firstIndex)}${generated.join("\n")}${config.slice(firstIndex)}`;
  config = config.replace(/\n{3,}/g, "\n\n");
  return { config, names };
}

/**
 * Starts HAProxy in the foreground (-db) from the example config and waits until the health
 * check of every node passed (status UP, check status L7OK).
 */
export async function startHaproxy(nodes) {
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), "crier-haproxy-"));
  const socketPath = path.join(directory, "stats.sock");
  const port = await freePort();
  const template = fs.readFileSync(HAPROXY_TEMPLATE, "utf8");
  const { config, names } = haproxyConfig(template, { port, nodes, socketPath, appId: APP.id });
  const configPath = path.join(directory, "haproxy.cfg");
  fs.writeFileSync(configPath, config);

  const helper = new HelperProcess("haproxy", ["-db", "-f", configPath], "haproxy");
  const haproxy = new Haproxy({ process: helper, port, socketPath, directory, serverNames: names });
  try {
    const spawnFailed = helper.spawnError.then((error) => {
      throw error;
    });
    const healthy = waitFor(
      async () => {
        if (helper.exitStatus !== null) {
          throw new Error(`haproxy exited (${JSON.stringify(helper.exitStatus)}); output:\n${helper.outputText()}\nconfig:\n${config}`);
        }
        let servers;
        try {
          servers = await haproxy.servers();
        } catch (error) {
          // The stats socket appears once HAProxy has parsed its config.
          if (error.code === "ENOENT" || error.code === "ECONNREFUSED") {
            return false;
          }
          throw error;
        }
        return names.every((name) => servers[name]?.status === "UP" && servers[name]?.check_status === "L7OK");
      },
      HAPROXY_START_TIMEOUT_MS,
      "every HAProxy server to pass its health check",
    );
    await Promise.race([healthy, spawnFailed]);
  } catch (error) {
    await haproxy.stop();
    error.message += `\nhaproxy output:\n${helper.outputText()}`;
    throw error;
  }
  return haproxy;
}

export function randomId() {
  return crypto.randomBytes(8).toString("hex");
}
