// Smoke check of a running server (the baseline, or chat-api itself): starts nothing.
//
//   BASE_URL=http://127.0.0.1:3001 node smoke.mjs
//
// Registers a user, creates a channel, posts, reads the latest page twice (the second read should
// come from the cache), reads an older page, lists the user's channels, and checks the JSON
// shapes chat-bench relies on. Exits non-zero on the first failed check.
import assert from "node:assert/strict";

const base = (process.env.BASE_URL || "http://127.0.0.1:3000").replace(/\/$/, "");
const ULID = /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/;

async function call(method, path, { token, body, expect } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(base + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const json = text && res.headers.get("content-type")?.includes("json") ? JSON.parse(text) : text;
  if (expect !== undefined) {
    assert.equal(res.status, expect, `${method} ${path}: expected ${expect}, got ${res.status}: ${text}`);
  }
  return { status: res.status, json, text };
}

async function metrics() {
  const { text } = await call("GET", "/metrics", { expect: 200 });
  const sum = (name) =>
    text
      .split("\n")
      .filter((l) => l.startsWith(name))
      .reduce((n, l) => n + Number(l.split(" ").pop()), 0);
  return { hits: sum("chat_cache_hits_total"), db: sum("chat_db_queries_total") };
}

const errorShape = (json) => {
  assert.equal(typeof json.error?.code, "string");
  assert.equal(typeof json.error?.message, "string");
};

const health = await call("GET", "/health", { expect: 200 });
assert.equal(typeof health.json, "object");
console.log("ok   /health", JSON.stringify(health.json));

const suffix = Date.now().toString(36) + Math.floor(Math.random() * 1e6).toString(36);
const reg = await call("POST", "/api/v1/users", { body: { name: `smoke_${suffix}` }, expect: 201 });
assert.match(reg.json.user.id, ULID);
assert.equal(reg.json.user.name, `smoke_${suffix}`);
assert.ok(reg.json.token.startsWith(`${reg.json.user.id}.`));
const token = reg.json.token;
console.log("ok   register");

const dup = await call("POST", "/api/v1/users", { body: { name: `smoke_${suffix}` }, expect: 409 });
errorShape(dup.json);
const noAuth = await call("GET", "/api/v1/users/me/channels", { expect: 401 });
errorShape(noAuth.json);
const badAuth = await call("GET", "/api/v1/users/me/channels", {
  token: `${reg.json.user.id}.${"0".repeat(64)}`,
  expect: 401,
});
errorShape(badAuth.json);
console.log("ok   409 / 401 error shapes");

const ch = await call("POST", "/api/v1/channels", {
  token,
  body: { name: `smoke ${suffix}`, kind: "public" },
  expect: 201,
});
assert.match(ch.json.id, ULID);
assert.equal(ch.json.kind, "public");
const cid = ch.json.id;
console.log("ok   create channel");

let list = await call("GET", "/api/v1/users/me/channels", { token, expect: 200 });
assert.ok(list.json.channels.some((c) => c.id === cid && c.name && c.kind === "public"));
console.log("ok   my channels");

// A second user: not a member until they join.
const other = await call("POST", "/api/v1/users", { body: { name: `smoke2_${suffix}` }, expect: 201 });
const forbidden = await call("GET", `/api/v1/channels/${cid}/messages?limit=50`, {
  token: other.json.token,
  expect: 403,
});
errorShape(forbidden.json);
await call("PUT", `/api/v1/channels/${cid}/members/me`, { token: other.json.token, expect: 204 });
await call("GET", `/api/v1/channels/${cid}/messages?limit=50`, { token: other.json.token, expect: 200 });
console.log("ok   403 for non-members, join 204");

const ids = [];
for (let i = 0; i < 3; i++) {
  const post = await call("POST", `/api/v1/channels/${cid}/messages`, {
    token,
    body: { content: `hello ${i} 👍` },
    expect: 201,
  });
  assert.match(post.json.id, ULID);
  assert.equal(post.json.channel_id, cid);
  assert.equal(post.json.author.id, reg.json.user.id);
  assert.equal(post.json.content, `hello ${i} 👍`);
  assert.equal(post.json.edited_at, null);
  assert.ok(!Number.isNaN(Date.parse(post.json.created_at)));
  ids.push(post.json.id);
}
console.log("ok   post ×3");

const m0 = await metrics();
const first = await call("GET", `/api/v1/channels/${cid}/messages?limit=2`, { token, expect: 200 });
const m1 = await metrics();
const second = await call("GET", `/api/v1/channels/${cid}/messages?limit=2`, { token, expect: 200 });
const m2 = await metrics();
assert.deepEqual(first.json, second.json);
assert.deepEqual(
  first.json.messages.map((m) => m.id),
  [ids[2], ids[1]],
  "newest first",
);
assert.equal(first.json.has_more_before, true);
assert.equal(first.json.has_more_after, false);
assert.ok(m2.hits > m1.hits, "the second read of the latest page is a cache hit");
console.log(
  `ok   latest page twice: db queries ${m1.db - m0.db} then ${m2.db - m1.db}, cache hits +${m2.hits - m1.hits} on the second`,
);

// A post invalidates the cached page.
const post = await call("POST", `/api/v1/channels/${cid}/messages`, {
  token: other.json.token,
  body: { content: "after the cache fill" },
  expect: 201,
});
const third = await call("GET", `/api/v1/channels/${cid}/messages?limit=2`, { token, expect: 200 });
assert.equal(third.json.messages[0].id, post.json.id, "the post is visible after invalidation");
console.log("ok   post invalidates the cached page");

const older = await call("GET", `/api/v1/channels/${cid}/messages?limit=50&before=${ids[2]}`, {
  token,
  expect: 200,
});
assert.deepEqual(older.json.messages.map((m) => m.id), [ids[1], ids[0]]);
assert.equal(older.json.has_more_before, false);
assert.equal(older.json.has_more_after, true);
const around = await call("GET", `/api/v1/channels/${cid}/messages?limit=3&around=${ids[1]}`, {
  token,
  expect: 200,
});
assert.deepEqual(around.json.messages.map((m) => m.id), [ids[2], ids[1], ids[0]]);
console.log("ok   before / around pages");

const bad = await call("GET", `/api/v1/channels/${cid}/messages?limit=0`, { token, expect: 400 });
errorShape(bad.json);
const missing = await call("GET", `/api/v1/channels/${"0".repeat(26)}/messages`, { token, expect: 404 });
errorShape(missing.json);
console.log("ok   400 / 404 error shapes");

list = await call("GET", "/api/v1/users/me/channels", { token: other.json.token, expect: 200 });
assert.ok(list.json.channels.some((c) => c.id === cid), "join invalidated the channel list");
console.log("ok   join invalidates the joiner's channel list");

console.log("smoke: all checks passed");
