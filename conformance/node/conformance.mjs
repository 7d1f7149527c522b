// Conformance check: the official @upstash/redis SDK, unmodified, against upstash-gateway.
// Reads UPSTASH_REDIS_REST_URL / UPSTASH_REDIS_REST_TOKEN; exits non-zero on any mismatch.
import assert from "node:assert/strict";
import { Redis } from "@upstash/redis";

const url = process.env.UPSTASH_REDIS_REST_URL;
const token = process.env.UPSTASH_REDIS_REST_TOKEN;
if (!url || !token) {
  console.error("set UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN");
  process.exit(2);
}
const redis = new Redis({ url, token, enableTelemetry: false });
const prefix = `node-conformance:${Date.now()}:`;
const k = (name) => prefix + name;

const results = [];
async function check(name, body) {
  try {
    await body();
    results.push({ name, ok: true });
    console.log(`ok    ${name}`);
  } catch (error) {
    results.push({ name, ok: false });
    console.log(`FAIL  ${name}: ${error?.stack ?? error}`);
  }
}

async function raw(path, { body, headers = {} } = {}) {
  const response = await fetch(`${url}${path}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, ...headers },
    body,
  });
  return { status: response.status, json: await response.json() };
}

await check("strings: set/get/incr/mset/mget/expire", async () => {
  assert.equal(await redis.set(k("s"), "value"), "OK");
  assert.equal(await redis.get(k("s")), "value");
  assert.equal(await redis.set(k("s"), "other", { nx: true }), null);
  assert.equal(await redis.set(k("ttl"), "v", { ex: 100 }), "OK");
  const ttl = await redis.ttl(k("ttl"));
  assert.ok(ttl > 0 && ttl <= 100, `ttl ${ttl}`);
  assert.equal(await redis.incr(k("n")), 1);
  assert.equal(await redis.incrby(k("n"), 41), 42);
  assert.equal(await redis.mset({ [k("m1")]: "a", [k("m2")]: "b" }), "OK");
  assert.deepEqual(await redis.mget(k("m1"), k("m2"), k("missing")), ["a", "b", null]);
  assert.equal(await redis.del(k("m1"), k("m2")), 2);
  assert.equal(await redis.exists(k("m1")), 0);
  assert.equal(await redis.get(k("missing")), null);
});

await check("emoji and unusual characters round-trip", async () => {
  const values = ["😀🎉 héllo wörld", "日本語テキスト", 'quotes " and \\ backslash', "line\nbreak\ttab", "nul\u0000byte", "OK", ""];
  for (const [i, value] of values.entries()) {
    await redis.set(k(`u${i}`), value);
    assert.equal(await redis.get(k(`u${i}`)), value, `value ${JSON.stringify(value)}`);
  }
  assert.equal(await redis.strlen(k("u0")), Buffer.byteLength(values[0]));
});

await check("binary-unsafe bytes: stored via path form, read back exactly via base64", async () => {
  const bytes = new Uint8Array([0xff, 0xfe, 0x00, 0x41, 0xc3, 0x28]);
  const set = await raw(`/set/${encodeURIComponent(k("bin"))}`, { body: bytes });
  assert.deepEqual(set, { status: 200, json: { result: "OK" } });
  const read = await raw("/", { body: JSON.stringify(["GET", k("bin")]), headers: { "Upstash-Encoding": "base64" } });
  assert.equal(read.json.result, Buffer.from(bytes).toString("base64"));
  assert.equal(await redis.strlen(k("bin")), bytes.length);
  // Through the SDK the bytes arrive as a (lossily decoded) string, as they do from Upstash.
  const viaSdk = await redis.get(k("bin"));
  assert.equal(typeof viaSdk, "string");
  assert.ok(viaSdk.includes("\uFFFD"), JSON.stringify(viaSdk));
});

await check("JSON values (automatic serialization)", async () => {
  const doc = { name: "ann", tags: ["a", "b"], nested: { n: 1.5, ok: true, none: null }, emoji: "🙂" };
  await redis.set(k("json"), doc);
  assert.deepEqual(await redis.get(k("json")), doc);
  await redis.set(k("num"), 12345);
  assert.equal(await redis.get(k("num")), 12345);
  await redis.lpush(k("list"), { id: 1 }, { id: 2 });
  assert.deepEqual(await redis.lrange(k("list"), 0, -1), [{ id: 2 }, { id: 1 }]);
});

await check("sets", async () => {
  assert.equal(await redis.sadd(k("set"), "a", "b", "c", "😀"), 4);
  assert.equal(await redis.sadd(k("set"), "a"), 0);
  assert.equal(await redis.scard(k("set")), 4);
  assert.equal(await redis.sismember(k("set"), "😀"), 1);
  assert.deepEqual((await redis.smembers(k("set"))).sort(), ["a", "b", "c", "😀"].sort());
  assert.equal(await redis.srem(k("set"), "a"), 1);
  await redis.sadd(k("set2"), "b", "z");
  assert.deepEqual(await redis.sinter(k("set"), k("set2")), ["b"]);
});

await check("hashes", async () => {
  assert.equal(await redis.hset(k("h"), { name: "ann", count: 1, profile: { age: 30 } }), 3);
  assert.equal(await redis.hget(k("h"), "name"), "ann");
  assert.equal(await redis.hincrby(k("h"), "count", 9), 10);
  assert.deepEqual(await redis.hgetall(k("h")), { name: "ann", count: 10, profile: { age: 30 } });
  assert.deepEqual(await redis.hmget(k("h"), "name", "nope"), { name: "ann", nope: null });
  assert.equal(await redis.hdel(k("h"), "name"), 1);
  assert.equal(await redis.hexists(k("h"), "name"), 0);
  assert.equal(await redis.hgetall(k("missing-hash")), null);
});

await check("sorted sets and lists", async () => {
  await redis.zadd(k("z"), { score: 2, member: "two" }, { score: 1, member: "one" });
  assert.deepEqual(await redis.zrange(k("z"), 0, -1, { withScores: true }), ["one", 1, "two", 2]);
  assert.equal(await redis.zscore(k("z"), "two"), 2);
  await redis.rpush(k("l"), "x", "y");
  assert.equal(await redis.lpop(k("l")), "x");
  assert.equal(await redis.llen(k("l")), 1);
});

await check("pipeline: ordered results, errors kept per command", async () => {
  const p = redis.pipeline();
  p.set(k("p"), "v");
  p.get(k("p"));
  p.incr(k("pn"));
  p.incr(k("p"));
  p.sadd(k("ps"), "m");
  const results = await p.exec({ keepErrors: true });
  assert.deepEqual(results.map((r) => r.result), ["OK", "v", 1, undefined, 1]);
  assert.match(results[3].error, /not an integer/);
  const plain = redis.pipeline().get(k("p")).exists(k("p"));
  assert.deepEqual(await plain.exec(), ["v", 1]);
  await assert.rejects(redis.pipeline().get(k("p")).incr(k("p")).exec(), /not an integer/);
});

await check("auto-pipelining of concurrent commands", async () => {
  const writes = await Promise.all(Array.from({ length: 50 }, (_, i) => redis.set(k(`ap${i}`), i)));
  assert.ok(writes.every((r) => r === "OK"));
  const reads = await Promise.all(Array.from({ length: 50 }, (_, i) => redis.get(k(`ap${i}`))));
  assert.deepEqual(reads, Array.from({ length: 50 }, (_, i) => i));
});

await check("transactions (multi/exec)", async () => {
  const tx = redis.multi();
  tx.set(k("t"), "1");
  tx.incr(k("t"));
  tx.get(k("t"));
  assert.deepEqual(await tx.exec(), ["OK", 2, 2]);
  const withError = redis.multi().set(k("tt"), "text").incr(k("tt")).get(k("tt"));
  const kept = await withError.exec({ keepErrors: true });
  assert.equal(kept[0].result, "OK");
  assert.match(kept[1].error, /not an integer/);
  assert.equal(kept[2].result, "text");
});

await check("errors are thrown as UpstashError", async () => {
  await redis.set(k("e"), "text");
  await assert.rejects(redis.incr(k("e")), (error) => error.name === "UpstashError" && /not an integer/.test(error.message));
  const stranger = new Redis({ url, token: "wrong-token", enableTelemetry: false, retry: false });
  await assert.rejects(stranger.get(k("e")), /WRONGPASS invalid or missing auth token/);
});

await check("scripts: eval and evalsha via createScript", async () => {
  assert.equal(await redis.eval("return ARGV[1]", [], ["echoed"]), "echoed");
  const script = redis.createScript("return redis.call('INCRBY', KEYS[1], ARGV[1])");
  assert.equal(await script.exec([k("sc")], ["5"]), 5);
  assert.equal(await script.exec([k("sc")], ["5"]), 10);
});

await check("read-your-writes sync token is tracked", async () => {
  await redis.set(k("ryw"), "1");
  const first = redis.readYourWritesSyncToken;
  assert.ok(first, "a sync token after a write");
  await redis.incr(k("ryw"));
  assert.notEqual(redis.readYourWritesSyncToken, undefined);
});

await check("subscribe receives a published message (SSE)", async () => {
  const channel = k("chan");
  const subscriber = redis.subscribe([channel]);
  const received = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no message within 5 s")), 5000);
    subscriber.on("message", ({ channel: from, message }) => {
      clearTimeout(timer);
      resolve({ from, message });
    });
  });
  // Publish until the subscription is live (the SSE stream opens asynchronously).
  let delivered = 0;
  for (let i = 0; i < 50 && delivered === 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    delivered = await redis.publish(channel, { text: "hello 👋" });
  }
  const { from, message } = await received;
  await subscriber.unsubscribe();
  assert.equal(from, channel);
  assert.deepEqual(message, { text: "hello 👋" });
});

// Opens `redis.subscribe` (or `psubscribe`) and records what the SDK hands to its listeners.
// Resolves once the stream is live (the SDK has seen the `subscribe` event).
async function recorder(target, { pattern = false } = {}) {
  const subscriber = pattern ? redis.psubscribe([target]) : redis.subscribe([target]);
  const seen = [];
  const waiters = [];
  const record = (entry) => {
    seen.push(entry);
    for (const waiter of waiters.splice(0)) waiter();
  };
  subscriber.on(pattern ? "pmessage" : "message", (data) => record({ message: data.message }));
  subscriber.on("error", (error) => record({ error: String(error) }));
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("not subscribed within 5 s")), 5000);
    subscriber.on(pattern ? "psubscribe" : "subscribe", () => {
      clearTimeout(timer);
      resolve();
    });
  });
  // Waits until `predicate(seen)` holds (or 5 s pass), then returns everything seen.
  const until = async (predicate) => {
    const deadline = Date.now() + 5000;
    while (!predicate(seen)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out; seen so far: ${JSON.stringify(seen)}`);
      await new Promise((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, left);
      });
    }
    return seen;
  };
  return { subscriber, until };
}

const endsWith = (sentinel) => (seen) => seen.some((e) => e.message === sentinel);

await check("subscribe/psubscribe: JSON messages with line breaks, commas and unicode arrive intact", async () => {
  const channel = k("text");
  const plain = await recorder(channel);
  const pattern = await recorder(`${prefix}te*`, { pattern: true });
  const sent = [
    { text: "line one\nline two" },
    { text: "crlf\r\nand a lone\rcr" },
    { text: "commas, everywhere,, ,", emoji: "👋 héllo 世界 \u2028" },
    ["a\n", "\nb", { nested: "x\r\ny" }],
    { text: "data: message,forged,not an event\n\n" },
  ];
  for (const message of sent) {
    // JSON.stringify escapes every control character: nothing breaks a line on the wire.
    assert.equal(await redis.publish(channel, message), 2);
  }
  await redis.publish(channel, { done: true });
  const done = (seen) => seen.some((e) => e.message?.done === true);
  const expected = [...sent, { done: true }].map((message) => ({ message }));
  assert.deepEqual(await plain.until(done), expected);
  assert.deepEqual(await pattern.until(done), expected);
  await plain.subscriber.unsubscribe();
  await pattern.subscriber.unsubscribe();
});

// A raw line break inside a message cannot reach a @upstash/redis listener intact, against the
// gateway and (by the SDK's code) against any server: the SDK splits the stream at every "\n"
// and hands each `data: ` line to the listener as an event of its own, without joining lines.
// This records exactly what it does with the gateway's framing (one `data:` line per line).
await check("subscribe: the SDK delivers a raw multi-line string cut at its first line break", async () => {
  const channel = k("lines");
  const { subscriber, until } = await recorder(channel);
  await redis.publish(channel, "first line\nsecond line");
  await redis.publish(channel, "windows\r\nline");
  await redis.publish(channel, "one line, with commas, and 👋");
  await redis.publish(channel, "end");
  assert.deepEqual(await until(endsWith("end")), [
    { message: "first line" }, // "second line" has no commas: the SDK drops it
    { message: "windows" }, // "\r\n" is one line break
    { message: "one line, with commas, and 👋" },
    { message: "end" },
  ]);
  await subscriber.unsubscribe();
});

await check("subscribe: SDK limitation: a continuation line shaped like an event is taken for one", async () => {
  const channel = k("shape");
  const { subscriber, until } = await recorder(channel);
  await redis.publish(channel, `real\nmessage,${channel},looks like a second message`);
  await redis.publish(channel, "end");
  assert.deepEqual(await until(endsWith("end")), [
    { message: "real" },
    { message: "looks like a second message" },
    { message: "end" },
  ]);
  await subscriber.unsubscribe();
});

await check("cleanup with scan + del", async () => {
  let cursor = "0";
  let keys = [];
  do {
    const [next, batch] = await redis.scan(cursor, { match: `${prefix}*`, count: 1000 });
    cursor = String(next);
    keys = keys.concat(batch);
  } while (cursor !== "0");
  assert.ok(keys.length > 10, `found ${keys.length} keys`);
  assert.equal(await redis.del(...keys), keys.length);
});

const failed = results.filter((r) => !r.ok);
console.log(`\n@upstash/redis conformance: ${results.length - failed.length} passed, ${failed.length} failed`);
process.exit(failed.length === 0 ? 0 : 1);
