// Shared harness for the integration tests: starts a real crier process, connects real clients
// (pusher-js, the pusher Node server library, raw `ws` sockets) and bounds every wait.
//
// Each test file calls useCrier() once at top level. That registers a `before` hook that starts
// crier on ports chosen by the OS and an `after` hook that closes every client the file opened
// and stops the process by its pid.

import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import path from "node:path";
import { after, before } from "node:test";
import { fileURLToPath } from "node:url";

import WebSocket from "ws";

const require = createRequire(import.meta.url);

// `require` picks the packages' Node builds: pusher-js resolves to dist/node/pusher.js.
export const PusherJs = require("pusher-js");
export const PusherServer = require("pusher");

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const CRIER_BIN = process.env.CRIER_BIN || path.join(REPO_ROOT, "target", "debug", "crier");

export const APP = Object.freeze({
  id: "1001",
  key: "crier-test-key",
  secret: "crier-test-secret",
});

// The query string pusher-js 8 sends; raw clients use it unless a test is about the query.
export const DEFAULT_QUERY = "protocol=7&client=js&version=8.4.2&flash=false";

export const SOCKET_ID_PATTERN = /^\d+\.\d+$/;

const STARTUP_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 10_000;
export const DEFAULT_WAIT_MS = 5_000;

// Strips ANSI colour codes, which a terminal-aware logger may add to the startup lines.
const ANSI_ESCAPE = /\x1b\[[0-9;]*m/g;
const WS_LISTENING = /websocket listening on 127\.0\.0\.1:(\d+)/;
const API_LISTENING = /http api listening on 127\.0\.0\.1:(\d+)/;

// Every crier process any test file started; killed on exit if an `after` hook never ran.
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

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `predicate` (sync or async) every 10 ms until it returns a truthy value, and returns
 * that value. Throws when `timeoutMs` passes first.
 */
export async function waitFor(predicate, timeoutMs = DEFAULT_WAIT_MS, description = "condition") {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) {
      return value;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${description}`);
    }
    await sleep(10);
  }
}

/** Races `promise` against a timer; rejects with a message naming `description` on timeout. */
export function withTimeout(promise, timeoutMs, description) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${description}`)),
      timeoutMs,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export function hmacHex(secret, text) {
  return crypto.createHmac("sha256", secret).update(text, "utf8").digest("hex");
}

export function md5Hex(body) {
  return crypto.createHash("md5").update(body).digest("hex");
}

/** Signs exactly `socketId:channel[:channelData]` and returns the subscription `auth` value. */
export function channelAuth(socketId, channel, channelData, app = APP) {
  const parts = [socketId, channel];
  if (channelData !== undefined) {
    parts.push(channelData);
  }
  return `${app.key}:${hmacHex(app.secret, parts.join(":"))}`;
}

export function uniqueName(prefix) {
  return `${prefix}${crypto.randomBytes(6).toString("hex")}`;
}

/**
 * A crier process with the ports it reported, plus factories for clients that are closed
 * automatically when the process is stopped.
 */
export class CrierServer {
  constructor({ child, app, stderrLines, exited }) {
    this.child = child;
    this.pid = child.pid;
    this.app = app;
    this.stderrLines = stderrLines;
    this.exited = exited;
    this.exitStatus = null;
    this.wsPort = null;
    this.apiPort = null;
    this.clients = new Set();
    exited.then((status) => {
      this.exitStatus = status;
    });
  }

  stderrText() {
    return this.stderrLines.join("\n");
  }

  wsUrl({ key = this.app.key, query = DEFAULT_QUERY, pathPrefix = "" } = {}) {
    const suffix = query === null ? "" : `?${query}`;
    return `ws://127.0.0.1:${this.wsPort}${pathPrefix}/app/${key}${suffix}`;
  }

  apiBaseUrl() {
    return `http://127.0.0.1:${this.apiPort}`;
  }

  /** Opens a raw WebSocket and resolves once the upgrade succeeded (no Pusher frame awaited). */
  async openRaw({ key, query, pathPrefix, protocols, wsOptions = {} } = {}) {
    const client = new RawClient(this.wsUrl({ key, query, pathPrefix }), protocols, wsOptions);
    this.clients.add(client);
    await client.opened();
    return client;
  }

  /**
   * Opens a raw WebSocket, waits for `pusher:connection_established` and returns the client
   * with `socketId` and `activityTimeout` taken from it.
   */
  async connectRaw(options = {}) {
    const client = await this.openRaw(options);
    const established = await client.waitForEvent("pusher:connection_established");
    const data = JSON.parse(established.json.data);
    client.socketId = data.socket_id;
    client.activityTimeout = data.activity_timeout;
    return client;
  }

  /** Connects a raw client and subscribes it to a public channel, waiting for the reply. */
  async subscribedRaw(channel, options = {}) {
    const client = await this.connectRaw(options);
    await client.subscribe(channel);
    return client;
  }

  /**
   * Connects a raw client to a presence channel as `channelData` (an object, sent compactly,
   * or a string sent as is) and waits for `subscription_succeeded`.
   */
  async presenceRaw(channel, channelData, options = {}) {
    const client = await this.connectRaw(options);
    await client.subscribePresence(channel, channelData, this.app);
    return client;
  }

  /** Creates a client of the official Node server library for this process's HTTP API. */
  api(overrides = {}) {
    return new PusherServer({
      appId: this.app.id,
      key: this.app.key,
      secret: this.app.secret,
      host: "127.0.0.1",
      port: String(this.apiPort),
      useTLS: false,
      timeout: DEFAULT_WAIT_MS,
      agent: httpAgent,
      ...overrides,
    });
  }

  /**
   * Creates a pusher-js client (Node build) that connects over plain ws to this process.
   * The pusher Node library's authorizeChannel signs its subscriptions, with `presenceData`
   * ({user_id, user_info}) as channel_data on presence channels. `authorize` replaces that
   * signer, for example to return a wrong signature.
   */
  pusherJs({ key = this.app.key, presenceData, authorize, options = {} } = {}) {
    const signer = this.api();
    const customHandler = (params, callback) => {
      try {
        if (authorize) {
          callback(null, authorize(params));
        } else if (params.channelName.startsWith("presence-")) {
          callback(null, signer.authorizeChannel(params.socketId, params.channelName, presenceData));
        } else {
          callback(null, signer.authorizeChannel(params.socketId, params.channelName));
        }
      } catch (error) {
        callback(error, null);
      }
    };
    const client = new PusherJs(key, {
      cluster: "crier-test",
      wsHost: "127.0.0.1",
      wsPort: this.wsPort,
      forceTLS: false,
      enabledTransports: ["ws"],
      enableStats: false,
      channelAuthorization: { customHandler },
      ...options,
    });
    const tracked = { close: () => client.disconnect() };
    this.clients.add(tracked);
    return client;
  }

  /**
   * Sends an HTTP API request signed with auth_version 1.0. Every part can be overridden, so
   * tests can send the invalid requests that the server libraries never produce.
   * Query values go on the wire unescaped, as pusher-http-node sends them. With
   * `percentEncode` they are percent-encoded, as PHP's Guzzle sends them. The signature always
   * covers the decoded values.
   */
  async request({
    method = "GET",
    path: requestPath,
    query = {},
    body,
    key = this.app.key,
    secret = this.app.secret,
    timestamp = Math.floor(Date.now() / 1000),
    authVersion = "1.0",
    bodyMd5,
    omitBodyMd5 = false,
    signature,
    headers = {},
    percentEncode = false,
  }) {
    let bodyText = body;
    if (body !== undefined && typeof body !== "string") {
      bodyText = JSON.stringify(body);
    }
    const params = {
      auth_key: key,
      auth_timestamp: String(timestamp),
      auth_version: authVersion,
      ...query,
    };
    if (bodyMd5 !== undefined) {
      params.body_md5 = bodyMd5;
    } else if (bodyText !== undefined && bodyText !== "" && !omitBodyMd5) {
      params.body_md5 = md5Hex(Buffer.from(bodyText, "utf8"));
    }
    const canonical = Object.keys(params)
      .sort()
      .map((name) => `${name.toLowerCase()}=${params[name]}`)
      .join("&");
    const stringToSign = `${method.toUpperCase()}\n${requestPath}\n${canonical}`;
    const authSignature = signature ?? hmacHex(secret, stringToSign);
    const wireQuery = Object.entries({ ...params, auth_signature: authSignature })
      .map(([name, value]) => (percentEncode ? `${name}=${encodeURIComponent(value)}` : `${name}=${value}`))
      .join("&");
    const requestHeaders = bodyText === undefined ? headers : { "content-type": "application/json", ...headers };
    return httpRequest(`${this.apiBaseUrl()}${requestPath}?${wireQuery}`, {
      method,
      headers: requestHeaders,
      body: bodyText,
    });
  }

  /** Sends an HTTP request with no signing at all. */
  rawHttp(requestPath, { method = "GET", headers = {}, body } = {}) {
    return httpRequest(`${this.apiBaseUrl()}${requestPath}`, { method, headers, body });
  }

  closeClients() {
    for (const client of this.clients) {
      try {
        client.close();
      } catch {
        // A client that failed to open has nothing to close.
      }
    }
    this.clients.clear();
  }

  /**
   * Sends SIGTERM to the process by pid, then SIGKILL if it has not exited within 10 s.
   * Returns the exit status with `killed` set when SIGKILL was needed.
   */
  async stop() {
    this.closeClients();
    if (this.exitStatus !== null) {
      return { ...this.exitStatus, killed: false };
    }
    this.signal("SIGTERM");
    try {
      const status = await withTimeout(this.exited, STOP_TIMEOUT_MS, `crier pid ${this.pid} to exit after SIGTERM`);
      return { ...status, killed: false };
    } catch {
      this.signal("SIGKILL");
      const status = await withTimeout(this.exited, STOP_TIMEOUT_MS, `crier pid ${this.pid} to exit after SIGKILL`);
      return { ...status, killed: true };
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

// Connections are not kept alive, so no idle HTTP connection delays crier's shutdown.
const httpAgent = new http.Agent({ keepAlive: false });

/**
 * Sends one HTTP request and resolves with {status, headers, text, json}, where `headers` has
 * lower-case names and `json` is undefined when the body is not JSON.
 */
function httpRequest(url, { method, headers, body }) {
  const sent = new Promise((resolve, reject) => {
    const request = http.request(url, { method, headers, agent: httpAgent }, (response) => {
      const chunks = [];
      response.on("data", (chunk) => chunks.push(chunk));
      response.on("error", reject);
      response.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let json;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: response.statusCode, headers: response.headers, text, json });
      });
    });
    request.on("error", reject);
    request.end(body);
  });
  return withTimeout(sent, DEFAULT_WAIT_MS, `${method} ${url}`);
}

/**
 * Spawns crier with the test app and ports chosen by the OS, and resolves once both
 * "listening" lines appeared on stderr. Rejects, with the stderr collected so far, when the
 * binary is missing, the process exits, or the lines do not appear within 10 s.
 */
export async function startCrier({
  app = APP,
  extraArgs = [],
  singleListener = false,
  passAppId = true,
  args,
} = {}) {
  if (!fs.existsSync(CRIER_BIN)) {
    throw new Error(
      `crier binary not found at ${CRIER_BIN}: run \`cargo build -p crier-smol\` or set CRIER_BIN`,
    );
  }
  // crier serves WebSocket and HTTP on one listener when the two host strings are equal. Both
  // listeners use port 0 here, so separate mode spells the API port "00": it still parses to
  // port 0 (the OS picks a free port), but the strings differ.
  const wsHost = "127.0.0.1:0";
  const apiHost = singleListener ? "127.0.0.1:0" : "127.0.0.1:00";
  const argv = args ?? [
    "--app_key",
    app.key,
    "--secret",
    app.secret,
    ...(passAppId ? ["--app_id", app.id] : []),
    "--websocket_host",
    wsHost,
    "--api_host",
    apiHost,
    ...extraArgs,
  ];

  const child = spawn(CRIER_BIN, argv, { stdio: ["ignore", "ignore", "pipe"] });
  runningPids.add(child.pid);
  const exited = new Promise((resolve) => {
    child.on("exit", (code, signal) => {
      runningPids.delete(child.pid);
      resolve({ code, signal });
    });
  });
  const stderrLines = [];
  const server = new CrierServer({ child, app, stderrLines, exited });

  const ready = new Promise((resolve, reject) => {
    let pending = "";
    child.on("error", (error) => reject(new Error(`failed to start ${CRIER_BIN}: ${error.message}`)));
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      pending += chunk;
      const lines = pending.split("\n");
      pending = lines.pop();
      for (const line of lines) {
        const clean = line.replace(ANSI_ESCAPE, "");
        stderrLines.push(clean);
        const wsMatch = clean.match(WS_LISTENING);
        if (wsMatch) {
          server.wsPort = Number(wsMatch[1]);
        }
        const apiMatch = clean.match(API_LISTENING);
        if (apiMatch) {
          server.apiPort = Number(apiMatch[1]);
        }
      }
      if (server.wsPort !== null && server.apiPort !== null) {
        resolve(server);
      }
    });
    exited.then(({ code, signal }) => {
      reject(
        new Error(
          `crier exited before listening (code ${code}, signal ${signal}); stderr:\n${server.stderrText()}`,
        ),
      );
    });
  });

  try {
    return await withTimeout(ready, STARTUP_TIMEOUT_MS, "crier's 'listening on' lines on stderr");
  } catch (error) {
    await server.stop();
    error.message += `\ncommand: ${CRIER_BIN} ${argv.join(" ")}\nstderr:\n${server.stderrText()}`;
    throw error;
  }
}

/**
 * Runs crier with `argv` and waits for it to exit, for tests of startup failures. Kills it by
 * pid and rejects if it is still running after `timeoutMs`.
 */
export async function runCrierToExit(argv, timeoutMs = 10_000) {
  if (!fs.existsSync(CRIER_BIN)) {
    throw new Error(
      `crier binary not found at ${CRIER_BIN}: run \`cargo build -p crier-smol\` or set CRIER_BIN`,
    );
  }
  const child = spawn(CRIER_BIN, argv, { stdio: ["ignore", "ignore", "pipe"] });
  runningPids.add(child.pid);
  let stderr = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => {
      runningPids.delete(child.pid);
      resolve({ code, signal, stderr: stderr.replace(ANSI_ESCAPE, "") });
    });
  });
  try {
    return await withTimeout(exited, timeoutMs, `crier ${argv.join(" ")} to exit`);
  } catch (error) {
    try {
      process.kill(child.pid, "SIGKILL");
    } catch {
      // Already gone.
    }
    throw error;
  }
}

/**
 * Registers before/after hooks in the calling test file that start crier and always stop it.
 * Returns a holder whose `server` property is set once the `before` hook ran.
 */
export function useCrier(options = {}) {
  const holder = { server: null };
  before(async () => {
    holder.server = await startCrier(options);
  });
  after(async () => {
    if (!holder.server) {
      return;
    }
    const status = await holder.server.stop();
    if (status.killed) {
      throw new Error(
        `crier pid ${holder.server.pid} did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM; ` +
          `stderr:\n${holder.server.stderrText()}`,
      );
    }
  });
  return holder;
}

/**
 * A `ws` client that records every frame it receives (text frames parsed as JSON where
 * possible), every WebSocket Ping, and the close code.
 */
export class RawClient {
  constructor(url, protocols, wsOptions = {}) {
    this.url = url;
    this.messages = [];
    this.pings = [];
    this.closeEvent = null;
    this.socketId = null;
    this.activityTimeout = null;
    this.unexpectedResponse = null;
    this.wasOpened = false;

    this.ws = new WebSocket(url, protocols, wsOptions);
    this.ws.on("open", () => {
      this.wasOpened = true;
    });
    this.ws.on("message", (data, isBinary) => {
      const text = isBinary ? null : data.toString("utf8");
      let json;
      if (text !== null) {
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
      }
      this.messages.push({ text, json, isBinary, at: Date.now() });
    });

    this.ws.on("ping", () => this.pings.push(Date.now()));
    this.ws.on("close", (code, reason) => {
      this.closeEvent = { code, reason: reason.toString("utf8"), at: Date.now() };
    });
    this.ws.on("unexpected-response", (request, response) => {
      this.unexpectedResponse = { status: response.statusCode };
      request.destroy();
    });
    // Errors surface through opened() and the close event; an unhandled 'error' would crash.
    this.ws.on("error", (error) => {
      this.error = error;
    });
  }

  opened(timeoutMs = DEFAULT_WAIT_MS) {
    return waitFor(
      () => {
        // A server that rejects the connection may send its error and close before the
        // first poll, so an upgrade that succeeded counts even when the socket is closed now.
        if (this.wasOpened) {
          return true;
        }
        if (this.unexpectedResponse) {
          throw new Error(`upgrade of ${this.url} rejected with HTTP ${this.unexpectedResponse.status}`);
        }
        if (this.ws.readyState === WebSocket.CLOSED) {
          throw new Error(`connection to ${this.url} failed: ${this.error?.message ?? "closed"}`);
        }
        return false;
      },
      timeoutMs,
      `WebSocket upgrade of ${this.url}`,
    );
  }

  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  send(frame) {
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  /** Index of the next frame to arrive; pass it as `since` to look only at later frames. */
  mark() {
    return this.messages.length;
  }

  events(name, since = 0) {
    return this.messages.slice(since).filter((message) => message.json?.event === name);
  }

  /** Resolves with the first frame at index >= `since` that matches `predicate`. */
  waitForMessage(predicate, { since = 0, timeoutMs = DEFAULT_WAIT_MS, description = "a matching frame" } = {}) {
    return waitFor(
      () => this.messages.slice(since).find(predicate),
      timeoutMs,
      `${description} on ${this.url}; frames so far: ${this.describeMessages(since)}`,
    );
  }

  waitForEvent(name, { since = 0, channel, timeoutMs = DEFAULT_WAIT_MS } = {}) {
    return this.waitForMessage(
      (message) => message.json?.event === name && (channel === undefined || message.json.channel === channel),
      { since, timeoutMs, description: `event ${name}${channel ? ` on ${channel}` : ""}` },
    );
  }

  describeMessages(since = 0) {
    const texts = this.messages.slice(since).map((message) => message.text ?? "<binary>");
    return texts.length === 0 ? "(none)" : texts.map((text) => text.slice(0, 300)).join(" | ");
  }

  /** Resolves with {code, reason} once the server closed the connection. */
  waitForClose(timeoutMs = DEFAULT_WAIT_MS) {
    return waitFor(() => this.closeEvent, timeoutMs, `close of ${this.url}; frames: ${this.describeMessages()}`);
  }

  /**
   * Sends `pusher:ping` and waits for the `pusher:pong` after it. Because a connection's
   * frames are handled in order, the pong also shows that every earlier frame was handled
   * and the connection is still usable.
   */
  async roundTrip(timeoutMs = DEFAULT_WAIT_MS) {
    const since = this.mark();
    this.send({ event: "pusher:ping", data: {} });
    return this.waitForMessage((message) => message.json?.event === "pusher:pong", {
      since,
      timeoutMs,
      description: "pusher:pong after pusher:ping",
    });
  }

  async subscribe(channel, { auth, channelData } = {}) {
    const since = this.mark();
    const data = { auth: auth ?? "", channel };
    if (channelData !== undefined) {
      data.channel_data = channelData;
    }
    this.send({ event: "pusher:subscribe", data });
    return this.waitForEvent("pusher_internal:subscription_succeeded", { since, channel });
  }

  async subscribePrivate(channel, app = APP) {
    return this.subscribe(channel, { auth: channelAuth(this.socketId, channel, undefined, app) });
  }

  async subscribePresence(channel, channelData, app = APP) {
    const dataText = typeof channelData === "string" ? channelData : JSON.stringify(channelData);
    return this.subscribe(channel, { auth: channelAuth(this.socketId, channel, dataText, app), channelData: dataText });
  }

  /** Sends a subscribe frame and returns without waiting for any reply. */
  sendSubscribe(channel, { auth, channelData } = {}) {
    const data = { auth: auth ?? "", channel };
    if (channelData !== undefined) {
      data.channel_data = channelData;
    }
    this.send({ event: "pusher:subscribe", data });
  }

  close() {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.terminate();
    }
  }

  /** Closes with a normal close handshake and waits until the socket is closed. */
  async closeGracefully(timeoutMs = DEFAULT_WAIT_MS) {
    this.ws.close(1000);
    await waitFor(() => this.ws.readyState === WebSocket.CLOSED, timeoutMs, `close of ${this.url}`);
  }
}

/** Parses the string `data` of a server-generated `pusher_internal:*` or `pusher:*` frame. */
export function decodeData(message) {
  const data = message.json.data;
  if (typeof data !== "string") {
    throw new Error(`expected data to be a string holding JSON, got ${JSON.stringify(data)}`);
  }
  return JSON.parse(data);
}

/**
 * Publishes a uniquely named event on `channel` through the HTTP API and waits until every
 * client in `clients` received it. Returns each client's index of that frame. Because a
 * connection's frames arrive in the order the server queued them, anything the server queued
 * for a client before this call shows up before that index.
 */
export async function barrier(server, channel, clients) {
  const name = uniqueName("barrier-");
  // A raw request, because the Node library refuses plain events on encrypted channels.
  const response = await server.request({
    method: "POST",
    path: `/apps/${server.app.id}/events`,
    body: { name, data: "{}", channels: [channel] },
  });
  if (response.status !== 200) {
    throw new Error(`barrier event on ${channel} failed with HTTP ${response.status}: ${response.text}`);
  }
  const indexes = [];
  for (const client of clients) {
    await client.waitForEvent(name, { channel });
    indexes.push(client.messages.findIndex((message) => message.json?.event === name));
  }
  return indexes;
}

/** Waits until pusher-js reports `state` ("connected", "disconnected", ...). */
export function waitForPusherState(client, state, timeoutMs = DEFAULT_WAIT_MS) {
  return waitFor(
    () => client.connection.state === state,
    timeoutMs,
    `pusher-js state "${state}" (now "${client.connection.state}")`,
  );
}

/** Resolves with the arguments of the first `eventName` that `emitter` (a pusher-js channel) emits. */
export function nextEmit(emitter, eventName, timeoutMs = DEFAULT_WAIT_MS) {
  let handler;
  const received = new Promise((resolve) => {
    handler = (...args) => resolve(args);
    emitter.bind(eventName, handler);
  });
  return withTimeout(received, timeoutMs, `pusher-js event ${eventName}`).finally(() =>
    emitter.unbind(eventName, handler),
  );
}
