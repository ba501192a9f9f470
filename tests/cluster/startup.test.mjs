// Cluster-mode start-up failures: crier must report an unreachable Redis or a bad cluster flag
// on one line and exit non-zero, instead of serving clients without the cluster.

import assert from "node:assert/strict";
import { test } from "node:test";

import { APP, runCrierToExit } from "../js/harness.mjs";
import { freePort, startRedis } from "./harness.mjs";

// crier gives the first connection 10 s, and 5 s more cover process start and exit.
const UNREACHABLE_EXIT_WITHIN_MS = 15_000;
const INVALID_EXIT_WITHIN_MS = 5_000;

function clusterArgs(redisUrl, extra = []) {
  return [
    "--app_key",
    APP.key,
    "--secret",
    APP.secret,
    "--app_id",
    APP.id,
    "--websocket_host",
    "127.0.0.1:0",
    "--api_host",
    "127.0.0.1:0",
    "--redis_address",
    redisUrl,
    ...extra,
  ];
}

function errorLines(stderr) {
  return stderr.split("\n").filter((line) => / ERROR /.test(line));
}

test("unreachable redis fails start-up", async () => {
  // Nothing listens on this port: it was free a moment ago and nothing here binds it.
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}/0`;
  const startedAt = Date.now();

  const result = await runCrierToExit(clusterArgs(url), UNREACHABLE_EXIT_WITHIN_MS);
  const elapsedMs = Date.now() - startedAt;

  assert.notEqual(result.code, 0, `exit status ${JSON.stringify(result)}`);
  assert.equal(result.signal, null);
  assert.ok(elapsedMs < UNREACHABLE_EXIT_WITHIN_MS, `exited after ${elapsedMs} ms`);
  const errors = errorLines(result.stderr);
  assert.equal(errors.length, 1, `stderr:\n${result.stderr}`);
  assert.match(errors[0], new RegExp(`cannot connect to redis at redis://127\\.0\\.0\\.1:${port}/0`));
  assert.doesNotMatch(result.stderr, /redis connected/);
  // A node without its cluster must not tell clients or load balancers where to connect.
  assert.doesNotMatch(result.stderr, /listening on/);
});

test("invalid redis address is rejected", async () => {
  const startedAt = Date.now();
  const result = await runCrierToExit(clusterArgs("http://127.0.0.1:1/"), UNREACHABLE_EXIT_WITHIN_MS);
  const elapsedMs = Date.now() - startedAt;

  assert.notEqual(result.code, 0, `exit status ${JSON.stringify(result)}`);
  assert.equal(result.signal, null);
  // A URL that does not parse fails before any connection attempt.
  assert.ok(elapsedMs < INVALID_EXIT_WITHIN_MS, `exited after ${elapsedMs} ms`);
  assert.match(result.stderr, /invalid redis[ _]address:? "http:\/\/127\.0\.0\.1:1\/"/);
});

test("node_timeout below 3 s is rejected", async (t) => {
  // A reachable Redis, so only the flag can make crier fail.
  const redis = await startRedis();
  t.after(() => redis.stop());

  const result = await runCrierToExit(clusterArgs(redis.url, ["--node_timeout", "2"]));

  assert.equal(result.code, 2, `exit status ${JSON.stringify(result)}; stderr:\n${result.stderr}`);
  assert.match(result.stderr, /node_timeout/);
  assert.doesNotMatch(result.stderr, /listening on/);
});
