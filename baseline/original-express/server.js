// A re-creation of the ORIGINAL chat server design, from its "Redis Implementation Summary":
// Express 4, SQLite, and a `RedisCache` class over the official @upstash/redis SDK
// (`Redis.fromEnv()`) with an in-memory `Map` fallback. It exists so the targets P3 (throughput and
// p99 vs the original design) and P5 (Upstash commands per 1,000 requests vs the original design)
// can be measured on the same machine, over the same SQLite file, with the same load generator
// (crates/chat-bench). It speaks the subset of chat-api's HTTP contract that chat-bench uses.
//
// Faithful, not tuned: it does what the summary describes (per-request auth and membership
// lookups in the database, the two cached reads with their TTLs, key tracking in Redis sets,
// memory fallback), with the SDK's defaults. It is neither made slow on purpose nor optimized
// beyond what the summary says. See README.md for the mapping and what was left out.

import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import Database from "better-sqlite3";
import express from "express";
import { Redis } from "@upstash/redis";
import { monotonicFactory } from "ulid";

// ---------------------------------------------------------------------------------------------
// Config: the same variables as chat-api (CHAT_ADDR, DATABASE_URL, UPSTASH_REDIS_REST_URL/TOKEN);
// nothing else is required.

const CHAT_ADDR = process.env.CHAT_ADDR || "127.0.0.1:3000";
const DATABASE_URL = process.env.DATABASE_URL || "sqlite://data/chat.db";

function parseAddr(addr) {
  const i = addr.lastIndexOf(":");
  if (i < 0) throw new Error(`CHAT_ADDR must be host:port, got ${JSON.stringify(addr)}`);
  const host = addr.slice(0, i).replace(/^\[(.*)\]$/, "$1");
  const port = Number(addr.slice(i + 1));
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`CHAT_ADDR has a bad port: ${JSON.stringify(addr)}`);
  }
  return { host, port };
}

// `sqlite:///abs/path.db` → `/abs/path.db`; `sqlite://rel/path.db` and `sqlite:rel.db` → relative.
function sqlitePath(url) {
  if (!url.startsWith("sqlite:")) {
    throw new Error("DATABASE_URL must be a sqlite: URL (this baseline has no PostgreSQL support)");
  }
  let rest = url.slice("sqlite:".length);
  if (rest.startsWith("//")) rest = rest.slice(2);
  rest = rest.split("?")[0];
  if (!rest || rest === ":memory:") throw new Error("DATABASE_URL must name a SQLite file");
  return rest;
}

// ---------------------------------------------------------------------------------------------
// Metrics: chat-api's names, served as Prometheus text at /metrics and as chat-api's /stats
// document at /stats (what chat-bench reads).

const metrics = {
  dbQueries: new Map(), // op → count
  hits: { upstash: 0, memory: 0 },
  misses: { upstash: 0, memory: 0 },
  errors: { upstash: 0 },
  loads: 0, // cache misses answered from the database
  upstashRequests: 0, // HTTP requests the SDK sent (auto-pipelined batches count once)
  upstashCommands: 0, // Redis commands sent (what Upstash bills; pipeline members each count)
  responses: new Map(), // "METHOD route status-class" → count
};

// ---------------------------------------------------------------------------------------------
// Database: the SQLite file chat-api creates (crates/chat-api/migrations/sqlite), same pragmas.

const dbFile = sqlitePath(DATABASE_URL);
if (path.dirname(dbFile) && path.dirname(dbFile) !== ".") {
  fs.mkdirSync(path.dirname(dbFile), { recursive: true });
}
const db = new Database(dbFile);
// As chat-api: WAL, FULL sync (a 201 survives a crash), foreign keys, 5 s busy timeout.
db.pragma("journal_mode = WAL");
db.pragma("synchronous = FULL");
db.pragma("foreign_keys = ON");
db.pragma("busy_timeout = 5000");

const hasSchema = db
  .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'users'")
  .get();
if (!hasSchema) {
  // Normally chat-api created and migrated the file. For a standalone smoke run, apply chat-api's
  // migration text directly (chat-api's own migrator cannot take over such a file later).
  const here = path.dirname(fileURLToPath(import.meta.url));
  const migration = path.join(here, "../../crates/chat-api/migrations/sqlite/0001_initial.sql");
  console.warn(`no schema in ${dbFile}: applying ${migration} (run chat-api first to avoid this)`);
  db.exec(fs.readFileSync(migration, "utf8"));
}

function counted(op, sql) {
  const stmt = db.prepare(sql);
  const count = () => metrics.dbQueries.set(op, (metrics.dbQueries.get(op) || 0) + 1);
  return {
    get: (...args) => (count(), stmt.get(...args)),
    all: (...args) => (count(), stmt.all(...args)),
    run: (...args) => (count(), stmt.run(...args)),
  };
}

// The page query of chat-api's store: the slice's messages in a subquery, joined with authors and
// reactions, newest first.
const pageSql = (filter) =>
  "SELECT m.id, m.channel_id, m.author_id, u.name AS author_name, m.content, m.nonce, " +
  "m.created_at, m.edited_at, r.emoji, r.user_id AS reactor_id " +
  "FROM (SELECT id, channel_id, author_id, content, nonce, created_at, edited_at " +
  `FROM messages WHERE channel_id = ? ${filter}) m JOIN users u ON u.id = m.author_id ` +
  "LEFT JOIN reactions r ON r.message_id = m.id " +
  "ORDER BY m.id DESC, r.created_at, r.user_id";

const sql = {
  ping: counted("ping", "SELECT 1"),
  createUser: counted(
    "create_user",
    "INSERT INTO users (id, name, token_hash, created_at) VALUES (?, ?, ?, ?)",
  ),
  userAuth: counted("user_auth", "SELECT id, name, token_hash FROM users WHERE id = ?"),
  insertChannel: db.prepare(
    "INSERT INTO channels (id, name, kind, owner_id, created_at) VALUES (?, ?, ?, ?, ?)",
  ),
  insertOwner: db.prepare(
    "INSERT INTO memberships (channel_id, user_id, role, joined_at) VALUES (?, ?, 'owner', ?)",
  ),
  channel: counted(
    "channel",
    "SELECT id, name, kind, owner_id, created_at FROM channels WHERE id = ?",
  ),
  membership: counted(
    "membership",
    "SELECT role, joined_at FROM memberships WHERE channel_id = ? AND user_id = ?",
  ),
  join: counted(
    "join",
    "INSERT INTO memberships (channel_id, user_id, role, joined_at) VALUES (?, ?, 'member', ?) " +
      "ON CONFLICT DO NOTHING",
  ),
  leave: counted("leave", "DELETE FROM memberships WHERE channel_id = ? AND user_id = ?"),
  userChannels: counted(
    "user_channels",
    "SELECT c.id, c.name, c.kind, c.owner_id, c.created_at, m.role, m.joined_at, m.last_read_id " +
      "FROM memberships m JOIN channels c ON c.id = m.channel_id " +
      "WHERE m.user_id = ? ORDER BY m.joined_at, c.id",
  ),
  latest: counted("messages", pageSql("ORDER BY id DESC LIMIT ?")),
  before: counted("messages", pageSql("AND id < ? ORDER BY id DESC LIMIT ?")),
  atOrBefore: counted("messages", pageSql("AND id <= ? ORDER BY id DESC LIMIT ?")),
  after: counted("messages", pageSql("AND id > ? ORDER BY id ASC LIMIT ?")),
  atOrAfter: counted("messages", pageSql("AND id >= ? ORDER BY id ASC LIMIT ?")),
  one: counted("message", pageSql("AND id = ?")),
  postMessage: counted(
    "post_message",
    "INSERT INTO messages (id, channel_id, author_id, content, nonce, created_at) " +
      "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
  ),
  messageByNonce: counted(
    "message_by_nonce",
    "SELECT id FROM messages WHERE channel_id = ? AND author_id = ? AND nonce = ?",
  ),
};

const createChannelTx = db.transaction((c) => {
  sql.insertChannel.run(c.id, c.name, c.kind, c.owner_id, c.created_at);
  sql.insertOwner.run(c.id, c.owner_id, c.created_at);
});

const iso = (ms) => (ms == null ? null : new Date(Number(ms)).toISOString());

// message × reaction rows (grouped by message, newest first) → the message JSON of chat-api.
function foldMessages(rows) {
  const out = [];
  for (const row of rows) {
    let message = out[out.length - 1];
    if (!message || message.id !== row.id) {
      message = {
        id: row.id,
        channel_id: row.channel_id,
        author: { id: row.author_id, name: row.author_name },
        content: row.content,
        created_at: iso(row.created_at),
        edited_at: iso(row.edited_at),
      };
      if (row.nonce != null) message.nonce = row.nonce;
      message.reactions = [];
      out.push(message);
    }
    if (row.emoji != null && row.reactor_id != null) {
      const reaction = message.reactions.find((r) => r.emoji === row.emoji);
      if (reaction) {
        reaction.count += 1;
        reaction.user_ids.push(row.reactor_id);
      } else {
        message.reactions.push({ emoji: row.emoji, count: 1, user_ids: [row.reactor_id] });
      }
    }
  }
  return out;
}

const channelJson = (r) => ({
  id: r.id,
  name: r.name,
  kind: r.kind,
  owner_id: r.owner_id,
  created_at: iso(r.created_at),
});

// ---------------------------------------------------------------------------------------------
// The cache: the original's `RedisCache` (server/lib/redis.js). @upstash/redis via
// `Redis.fromEnv()` when UPSTASH_REDIS_REST_URL/TOKEN are set; an in-memory Map with expiry when
// they are not, and for any call to Redis that fails ("automatic fallback to memory cache").

const upstashUrl = process.env.UPSTASH_REDIS_REST_URL || process.env.KV_REST_API_URL;
const upstashToken = process.env.UPSTASH_REDIS_REST_TOKEN || process.env.KV_REST_API_TOKEN;

// Instrumentation only: count the HTTP requests the SDK really sends (it auto-pipelines by
// default, so several commands can share one request). Behaviour is unchanged.
if (upstashUrl) {
  const base = upstashUrl.replace(/\/$/, "");
  const realFetch = globalThis.fetch;
  globalThis.fetch = (input, init) => {
    const url = typeof input === "string" ? input : input?.url ?? String(input);
    if (url.startsWith(base)) metrics.upstashRequests += 1;
    return realFetch(input, init);
  };
}

// Redis failures are logged at most once a second (with how many there were), not per call.
let failuresSinceLog = 0;
let lastFailureLog = 0;
function logRedisFailure(what, err) {
  failuresSinceLog += 1;
  const now = Date.now();
  if (now - lastFailureLog >= 1000) {
    console.error(
      `redis ${what} failed (${failuresSinceLog} failure(s) since last log), using memory cache: ${err?.message ?? err}`,
    );
    failuresSinceLog = 0;
    lastFailureLog = now;
  }
}

class RedisCache {
  constructor() {
    this.redis = upstashUrl && upstashToken ? Redis.fromEnv() : null;
    this.memoryCache = new Map(); // key → { value, expiresAt } (fallback cache)
    this.isConnected = false; // the outcome of the last Redis call, for /health
    // Memory cache with expiry tracking: sweep expired entries every minute.
    setInterval(() => this.sweepMemory(), 60_000).unref();
  }

  get backend() {
    return this.redis ? "upstash" : "memory";
  }

  async connect() {
    if (!this.redis) {
      console.log("Redis not configured (no UPSTASH_REDIS_REST_URL/TOKEN): using memory cache");
      return;
    }
    try {
      metrics.upstashCommands += 1;
      await this.redis.ping();
      this.isConnected = true;
      console.log("Connected to Upstash Redis");
    } catch (err) {
      this.isConnected = false;
      metrics.errors.upstash += 1;
      console.error(`Upstash Redis unreachable, using memory cache until it answers: ${err.message}`);
    }
  }

  // -- memory fallback -------------------------------------------------------------------------

  getFromMemory(key) {
    const entry = this.memoryCache.get(key);
    if (entry && entry.expiresAt > Date.now()) {
      metrics.hits.memory += 1;
      return entry.value;
    }
    if (entry) this.memoryCache.delete(key);
    metrics.misses.memory += 1;
    return null;
  }

  setInMemory(key, value, ttlSeconds) {
    this.memoryCache.set(key, { value, expiresAt: Date.now() + ttlSeconds * 1000 });
  }

  // Pattern-based invalidation of the memory cache: every key starting with `prefix`.
  deleteMemoryPrefix(prefix) {
    for (const key of this.memoryCache.keys()) {
      if (key.startsWith(prefix)) this.memoryCache.delete(key);
    }
  }

  sweepMemory() {
    const now = Date.now();
    for (const [key, entry] of this.memoryCache) {
      if (entry.expiresAt <= now) this.memoryCache.delete(key);
    }
  }

  // -- the cache API -----------------------------------------------------------------------------

  async get(key) {
    if (this.redis) {
      try {
        metrics.upstashCommands += 1;
        const value = await this.redis.get(key); // the SDK parses JSON back into objects
        this.isConnected = true;
        if (value !== null && value !== undefined) metrics.hits.upstash += 1;
        else metrics.misses.upstash += 1;
        return value ?? null;
      } catch (err) {
        this.isConnected = false;
        metrics.errors.upstash += 1;
        logRedisFailure("GET", err);
      }
    }
    return this.getFromMemory(key);
  }

  async set(key, value, ttlSeconds = 300) {
    if (this.redis) {
      try {
        metrics.upstashCommands += 1;
        await this.redis.set(key, value, { ex: ttlSeconds }); // the SDK serializes to JSON
        this.isConnected = true;
        return;
      } catch (err) {
        this.isConnected = false;
        metrics.errors.upstash += 1;
        logRedisFailure("SET", err);
      }
    }
    this.setInMemory(key, value, ttlSeconds);
  }

  // Set a value and record its key in the tracking set `setKey`, batched in one pipeline
  // ("Key Tracking: efficient cache invalidation using Redis sets"; "Batch operations").
  async setTracked(key, value, ttlSeconds, setKey) {
    if (this.redis) {
      try {
        const pipeline = this.redis.pipeline();
        pipeline.set(key, value, { ex: ttlSeconds });
        pipeline.sadd(setKey, key);
        metrics.upstashCommands += 2;
        await pipeline.exec();
        this.isConnected = true;
        return;
      } catch (err) {
        this.isConnected = false;
        metrics.errors.upstash += 1;
        logRedisFailure("SET+SADD", err);
      }
    }
    this.setInMemory(key, value, ttlSeconds);
  }

  async del(key) {
    this.memoryCache.delete(key);
    if (!this.redis) return;
    try {
      metrics.upstashCommands += 1;
      await this.redis.del(key);
      this.isConnected = true;
    } catch (err) {
      this.isConnected = false;
      metrics.errors.upstash += 1;
      logRedisFailure("DEL", err);
    }
  }

  // Delete every key recorded in the tracking set, and the set (SMEMBERS, then one DEL);
  // in memory, delete by key prefix.
  async invalidateTracked(setKey, memoryPrefix) {
    this.deleteMemoryPrefix(memoryPrefix);
    if (!this.redis) return;
    try {
      metrics.upstashCommands += 1;
      const keys = await this.redis.smembers(setKey);
      if (keys.length > 0) {
        metrics.upstashCommands += 1;
        await this.redis.del(...keys, setKey);
      }
      this.isConnected = true;
    } catch (err) {
      this.isConnected = false;
      metrics.errors.upstash += 1;
      logRedisFailure("invalidation", err);
    }
  }

  async ping() {
    if (!this.redis) return true;
    try {
      metrics.upstashCommands += 1;
      await this.redis.ping();
      this.isConnected = true;
    } catch {
      this.isConnected = false;
      metrics.errors.upstash += 1;
    }
    return this.isConnected;
  }
}

const cache = new RedisCache();

// The original's keys and TTLs.
const CHANNELS_TTL = 5 * 60; // "Channels: 5-minute cache"
const MESSAGES_TTL = 2 * 60; // "Messages: 2-minute cache"
const userChannelsKey = (userId) => `user:${userId}:channels`;
const channelMessagesKey = (channelId, limit) => `channel:${channelId}:messages:${limit}`;
const channelKeysSet = (channelId) => `channel:${channelId}:keys`;
const channelMessagesPrefix = (channelId) => `channel:${channelId}:messages:`;

// ---------------------------------------------------------------------------------------------
// Errors: chat-api's shape, {"error": {"code", "message"}}.

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}
const badParam = (message) => new ApiError(400, "invalid_param", message);
const invalid = (message) => new ApiError(400, "validation_failed", message);
const unauthorized = () => new ApiError(401, "unauthorized", "missing or invalid bearer token");
const channelNotFound = () => new ApiError(404, "channel_not_found", "channel not found");
const notAMember = () => new ApiError(403, "not_a_member", "you are not a member of this channel");

// Express 4 does not catch rejected promises: forward them to the error handler.
const ah = (fn) => (req, res, next) => Promise.resolve(fn(req, res, next)).catch(next);

// ---------------------------------------------------------------------------------------------
// Validation (the same rules and messages as chat-api's validate.rs, for the fields used here).

const ULID_RE = /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/i;
function ulidParam(name, value) {
  if (typeof value !== "string" || !ULID_RE.test(value)) {
    throw badParam(`${name} must be a 26-character ULID`);
  }
  return value.toUpperCase();
}

function limitParam(value) {
  if (value === undefined) return 50;
  if (typeof value !== "string" || !/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 100) {
    throw badParam("limit must be an integer from 1 to 100");
  }
  return Number(value);
}

const charCount = (s) => [...s].length;
function lengthRule(field, value, max) {
  if (typeof value !== "string" || charCount(value) === 0 || charCount(value) > max) {
    throw invalid(`${field} must be 1 to ${max} characters`);
  }
}
// Rust's char::is_control: the Cc category.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/u;

function validateUserName(name) {
  lengthRule("name", name, 32);
  if (!/^[\p{L}\p{N}_.-]+$/u.test(name)) {
    throw invalid("name may contain only letters, digits, '_', '-' and '.'");
  }
}

function validateChannelName(name) {
  lengthRule("name", name, 64);
  if (CONTROL.test(name) || name.trim() !== name) {
    throw invalid("name must be printable text without leading or trailing spaces");
  }
}

function validateContent(content) {
  lengthRule("content", content, 2000);
  if (/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/u.test(content)) {
    throw invalid("content may not contain control characters");
  }
  if (content.trim() === "") throw invalid("content may not be blank");
}

function validateNonce(nonce) {
  lengthRule("nonce", nonce, 64);
  if (CONTROL.test(nonce) || /\s/u.test(nonce)) {
    throw invalid("nonce may not contain whitespace or control characters");
  }
}

// ---------------------------------------------------------------------------------------------
// Auth: chat-api's tokens, `{userId}.{secret}` with SHA-256(secret) in users.token_hash. The
// original looked the user up in the database on every request (no auth cache).

const newId = monotonicFactory();
const sha256 = (text) => crypto.createHash("sha256").update(text).digest();

function authenticate(req, res, next) {
  const header = req.get("authorization") || "";
  const space = header.indexOf(" ");
  const scheme = space < 0 ? "" : header.slice(0, space);
  const token = space < 0 ? "" : header.slice(space + 1).trim();
  if (scheme.toLowerCase() !== "bearer") return next(unauthorized());
  const dot = token.indexOf(".");
  if (dot < 0) return next(unauthorized());
  const id = token.slice(0, dot);
  const secret = token.slice(dot + 1);
  if (!ULID_RE.test(id) || secret.length !== 64) return next(unauthorized());
  const row = sql.userAuth.get(id.toUpperCase());
  if (!row) return next(unauthorized());
  const presented = sha256(secret);
  const stored = Buffer.from(row.token_hash);
  if (stored.length !== presented.length || !crypto.timingSafeEqual(presented, stored)) {
    return next(unauthorized());
  }
  req.user = { id: row.id, name: row.name };
  next();
}

// The channel as the caller may see it, with their membership (chat-api's rules: a private
// channel does not exist for non-members). Straight from the database, as the original did.
function visibleChannel(cid, user) {
  const channel = sql.channel.get(cid);
  if (!channel) throw channelNotFound();
  const membership = sql.membership.get(cid, user.id) || null;
  if (channel.kind === "private" && !membership) throw channelNotFound();
  return { channel, membership };
}

function memberChannel(cid, user) {
  const found = visibleChannel(cid, user);
  if (!found.membership) throw notAMember();
  return found;
}

// ---------------------------------------------------------------------------------------------
// Routes.

const app = express();
app.use(express.json());

// Responses by route and status class (what chat-api's middleware counts).
app.use((req, res, next) => {
  res.on("finish", () => {
    const route = req.route ? req.baseUrl + req.route.path : "unmatched";
    const key = `${req.method} ${route} ${Math.floor(res.statusCode / 100)}xx`;
    metrics.responses.set(key, (metrics.responses.get(key) || 0) + 1);
  });
  next();
});

app.get(
  "/health",
  ah(async (req, res) => {
    let dbOk = true;
    try {
      sql.ping.get();
    } catch {
      dbOk = false;
    }
    const cacheOk = await cache.ping();
    const body = {
      status: !dbOk ? "unavailable" : cacheOk ? "ok" : "degraded",
      database: { kind: "sqlite", status: dbOk ? "ok" : "unavailable" },
      cache: {
        backend: cache.backend,
        status: cacheOk ? "ok" : "degraded",
        connected: cache.redis ? cache.isConnected : false,
        memory_entries: cache.memoryCache.size,
      },
    };
    res.status(dbOk ? 200 : 503).json(body);
  }),
);

// The same counts as chat-api's `/stats` document (version 1 of the `chat-stats` crate's types),
// which is what chat-bench reads around each run. Fields chat-api has and this design does not
// (breaker, lookups other than loads, …) are left out; readers default them.
app.get("/stats", (req, res) => {
  const byOp = Object.fromEntries([...metrics.dbQueries].sort());
  const tier = (name) => ({
    tier: name,
    backend: name,
    hits: metrics.hits[name],
    misses: metrics.misses[name],
    errors: name === "upstash" ? metrics.errors.upstash : 0,
    ...(name === "upstash"
      ? { requests: metrics.upstashRequests, commands: metrics.upstashCommands }
      : { entries: cache.memoryCache.size }),
  });
  const responses = { "1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0 };
  for (const [key, n] of metrics.responses) {
    const status = key.split(" ")[2];
    if (status in responses) responses[status] += n;
  }
  res.json({
    version: 1,
    cache: {
      tiers: (cache.redis ? ["upstash", "memory"] : ["memory"]).map(tier),
      lookups: { loads: metrics.loads },
    },
    db: { queries: Object.values(byOp).reduce((a, b) => a + b, 0), queries_by_op: byOp },
    http: { responses },
  });
});

app.get("/metrics", (req, res) => {
  const lines = [];
  const counter = (name, help) => lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`);
  counter("chat_db_queries_total", "Database statements run, by operation.");
  for (const [op, n] of [...metrics.dbQueries].sort()) {
    lines.push(`chat_db_queries_total{op="${op}"} ${n}`);
  }
  const tiers = cache.redis ? ["upstash", "memory"] : ["memory"];
  counter("chat_cache_hits_total", "Reads that found a valid entry.");
  for (const t of tiers) lines.push(`chat_cache_hits_total{tier="${t}",backend="${t}"} ${metrics.hits[t]}`);
  counter("chat_cache_misses_total", "Reads that found nothing valid.");
  for (const t of tiers) lines.push(`chat_cache_misses_total{tier="${t}",backend="${t}"} ${metrics.misses[t]}`);
  counter("chat_cache_loads_total", "Cache misses answered from the database.");
  lines.push(`chat_cache_loads_total ${metrics.loads}`);
  if (cache.redis) {
    counter("chat_cache_errors_total", "Redis calls that failed (answered from memory instead).");
    lines.push(`chat_cache_errors_total{tier="upstash",backend="upstash"} ${metrics.errors.upstash}`);
    counter("chat_cache_requests_total", "HTTP requests sent to Upstash.");
    lines.push(`chat_cache_requests_total{tier="upstash",backend="upstash"} ${metrics.upstashRequests}`);
    counter("chat_cache_commands_total", "Redis commands sent (what Upstash bills).");
    lines.push(`chat_cache_commands_total{tier="upstash",backend="upstash"} ${metrics.upstashCommands}`);
  }
  lines.push("# HELP chat_cache_entries Entries in the memory cache.", "# TYPE chat_cache_entries gauge");
  lines.push(`chat_cache_entries{tier="memory",backend="memory"} ${cache.memoryCache.size}`);
  counter("chat_http_responses_total", "HTTP responses by route and status class.");
  for (const [key, n] of [...metrics.responses].sort()) {
    const [method, route, status] = key.split(" ");
    lines.push(`chat_http_responses_total{method="${method}",route="${route}",status="${status}"} ${n}`);
  }
  res.type("text/plain; version=0.0.4; charset=utf-8").send(lines.join("\n") + "\n");
});

const api = express.Router();

// Registration: the only unauthenticated route.
api.post("/users", (req, res) => {
  const name = req.body?.name;
  validateUserName(name);
  const user = { id: newId(), name, created_at: Date.now() };
  const secret = crypto.randomBytes(32).toString("hex");
  try {
    sql.createUser.run(user.id, user.name, sha256(secret), user.created_at);
  } catch (err) {
    if (err.code === "SQLITE_CONSTRAINT_UNIQUE" || err.code === "SQLITE_CONSTRAINT_PRIMARYKEY") {
      throw new ApiError(409, "name_taken", "this name is taken");
    }
    throw err;
  }
  res.status(201).json({
    user: { id: user.id, name: user.name, created_at: iso(user.created_at) },
    token: `${user.id}.${secret}`,
  });
});

api.use(authenticate);

api.get("/users/me", (req, res) => res.json(req.user));

// My channels: cached per user for 5 minutes under `user:{userId}:channels`.
api.get(
  "/users/me/channels",
  ah(async (req, res) => {
    const key = userChannelsKey(req.user.id);
    let channels = await cache.get(key);
    if (!channels) {
      metrics.loads += 1;
      channels = sql.userChannels.all(req.user.id).map((r) => ({
        ...channelJson(r),
        role: r.role,
        joined_at: iso(r.joined_at),
        last_read_id: r.last_read_id ?? null,
      }));
      await cache.set(key, channels, CHANNELS_TTL);
    }
    res.json({ channels });
  }),
);

api.post(
  "/channels",
  ah(async (req, res) => {
    const name = req.body?.name;
    const kind = req.body?.kind ?? "public";
    validateChannelName(name);
    if (kind !== "public" && kind !== "private") {
      throw new ApiError(400, "invalid_json", "kind must be \"public\" or \"private\"");
    }
    const channel = { id: newId(), name, kind, owner_id: req.user.id, created_at: Date.now() };
    metrics.dbQueries.set("create_channel", (metrics.dbQueries.get("create_channel") || 0) + 1);
    createChannelTx(channel);
    // Smart invalidation: the creator's channel list changed.
    await cache.del(userChannelsKey(req.user.id));
    res.status(201).json(channelJson(channel));
  }),
);

api.get("/channels/:cid", (req, res) => {
  const cid = ulidParam("cid", req.params.cid);
  res.json(channelJson(visibleChannel(cid, req.user).channel));
});

api.put(
  "/channels/:cid/members/me",
  ah(async (req, res) => {
    const cid = ulidParam("cid", req.params.cid);
    const { membership } = visibleChannel(cid, req.user);
    if (!membership && sql.join.run(cid, req.user.id, Date.now()).changes === 1) {
      await cache.del(userChannelsKey(req.user.id));
    }
    res.status(204).end();
  }),
);

api.delete(
  "/channels/:cid/members/me",
  ah(async (req, res) => {
    const cid = ulidParam("cid", req.params.cid);
    memberChannel(cid, req.user);
    if (sql.leave.run(cid, req.user.id).changes === 1) {
      await cache.del(userChannelsKey(req.user.id));
    }
    res.status(204).end();
  }),
);

// Message pages, newest first. The latest page (no cursor) is cached for 2 minutes under
// `channel:{channelId}:messages:{limit}`, and its key recorded in `channel:{channelId}:keys`.
// Pages with a cursor are read from the database (the original's key has no cursor in it).
api.get(
  "/channels/:cid/messages",
  ah(async (req, res) => {
    const cid = ulidParam("cid", req.params.cid);
    const limit = limitParam(req.query.limit);
    const { before, after, around } = req.query;
    if ([before, after, around].filter((c) => c !== undefined).length > 1) {
      throw badParam("give at most one of before, after, around");
    }
    const cursor = (name, v) => (v === undefined ? undefined : ulidParam(name, v));
    const b = cursor("before", before);
    const a = cursor("after", after);
    const ar = cursor("around", around);
    memberChannel(cid, req.user);

    if (b === undefined && a === undefined && ar === undefined) {
      const key = channelMessagesKey(cid, limit);
      let page = await cache.get(key);
      if (!page) {
        metrics.loads += 1;
        const messages = foldMessages(sql.latest.all(cid, limit + 1));
        const hasMoreBefore = messages.length > limit;
        messages.length = Math.min(messages.length, limit);
        page = { messages, has_more_before: hasMoreBefore, has_more_after: false };
        await cache.setTracked(key, page, MESSAGES_TTL, channelKeysSet(cid));
      }
      return res.json(page);
    }

    let messages, hasMoreBefore, hasMoreAfter;
    if (b !== undefined) {
      messages = foldMessages(sql.before.all(cid, b, limit + 1));
      hasMoreBefore = messages.length > limit;
      messages.length = Math.min(messages.length, limit);
      hasMoreAfter = foldMessages(sql.atOrAfter.all(cid, b, 1)).length > 0;
    } else if (a !== undefined) {
      messages = foldMessages(sql.after.all(cid, a, limit + 1));
      hasMoreAfter = messages.length > limit;
      if (hasMoreAfter) messages.shift(); // newest first: drop the one furthest from the cursor
      hasMoreBefore = foldMessages(sql.atOrBefore.all(cid, a, 1)).length > 0;
    } else {
      const olderWanted = limit - Math.floor(limit / 2);
      const newerWanted = Math.floor(limit / 2);
      const older = foldMessages(sql.atOrBefore.all(cid, ar, olderWanted + 1));
      const newer = foldMessages(sql.after.all(cid, ar, newerWanted + 1));
      hasMoreBefore = older.length > olderWanted;
      older.length = Math.min(older.length, olderWanted);
      hasMoreAfter = newer.length > newerWanted;
      newer.splice(0, Math.max(0, newer.length - newerWanted));
      messages = newer.concat(older);
    }
    res.json({ messages, has_more_before: hasMoreBefore, has_more_after: hasMoreAfter });
  }),
);

// Post a message; then invalidate the channel's cached pages through the key-tracking set.
api.post(
  "/channels/:cid/messages",
  ah(async (req, res) => {
    const cid = ulidParam("cid", req.params.cid);
    const content = req.body?.content;
    const nonce = req.body?.nonce ?? null;
    validateContent(content);
    if (nonce !== null) validateNonce(nonce);
    memberChannel(cid, req.user);
    const message = {
      id: newId(),
      channel_id: cid,
      author: { id: req.user.id, name: req.user.name },
      content,
      created_at: Date.now(),
    };
    const inserted = sql.postMessage.run(
      message.id, cid, req.user.id, content, nonce, message.created_at,
    ).changes;
    if (inserted !== 1) {
      // A retry with the same nonce: answer with the message it already created.
      const { id } = sql.messageByNonce.get(cid, req.user.id, nonce);
      await cache.invalidateTracked(channelKeysSet(cid), channelMessagesPrefix(cid));
      return res.status(200).json(foldMessages(sql.one.all(cid, id))[0]);
    }
    await cache.invalidateTracked(channelKeysSet(cid), channelMessagesPrefix(cid));
    const body = {
      id: message.id,
      channel_id: cid,
      author: message.author,
      content,
      created_at: iso(message.created_at),
      edited_at: null,
    };
    if (nonce !== null) body.nonce = nonce;
    body.reactions = [];
    res.status(201).json(body);
  }),
);

app.use("/api/v1", api);

app.use((req, res, next) => next(new ApiError(404, "not_found", "no such route")));

// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => {
  if (err instanceof ApiError) {
    if (err.status === 401) res.set("WWW-Authenticate", "Bearer");
    return res.status(err.status).json({ error: { code: err.code, message: err.message } });
  }
  if (err.type === "entity.parse.failed") {
    return res.status(400).json({ error: { code: "invalid_json", message: "malformed JSON body" } });
  }
  if (err.type === "entity.too.large") {
    return res.status(413).json({ error: { code: "payload_too_large", message: "request body too large" } });
  }
  console.error("request failed:", err);
  res.status(500).json({ error: { code: "internal", message: "internal error" } });
});

// ---------------------------------------------------------------------------------------------

await cache.connect();
const { host, port } = parseAddr(CHAT_ADDR);
const server = app.listen(port, host, () => {
  const a = server.address();
  console.log(`original-design baseline listening on ${a.address}:${a.port} (db ${dbFile}, cache ${cache.backend})`);
});

function shutdown(signal) {
  console.log(`${signal}: shutting down`);
  server.close(() => {
    db.close();
    process.exit(0);
  });
  server.closeIdleConnections?.();
  setTimeout(() => process.exit(0), 5000).unref();
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
