"""Conformance check: the official upstash-redis (PyPI) SDK, unmodified, against upstash-gateway.

Reads UPSTASH_REDIS_REST_URL / UPSTASH_REDIS_REST_TOKEN; exits non-zero on any mismatch.
"""

import base64
import json
import os
import sys
import time
import traceback
import urllib.parse

import httpx
from upstash_redis import Redis
from upstash_redis.errors import UpstashError

URL = os.environ.get("UPSTASH_REDIS_REST_URL")
TOKEN = os.environ.get("UPSTASH_REDIS_REST_TOKEN")
if not URL or not TOKEN:
    print("set UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN", file=sys.stderr)
    sys.exit(2)

redis = Redis(url=URL, token=TOKEN, allow_telemetry=False)
PREFIX = f"py-conformance:{time.time_ns()}:"
results = []


def k(name):
    return PREFIX + name


def check(name):
    def run(body):
        try:
            body()
            results.append(True)
            print(f"ok    {name}")
        except Exception:  # noqa: BLE001 - report every failure, keep going
            results.append(False)
            print(f"FAIL  {name}:\n{traceback.format_exc()}")
        return body

    return run


def eq(actual, expected):
    assert actual == expected, f"expected {expected!r}, got {actual!r}"


@check("strings: set/get/incr/mset/mget/expire")
def _():
    eq(redis.set(k("s"), "value"), True)
    eq(redis.get(k("s")), "value")
    eq(redis.set(k("s"), "other", nx=True), False)
    eq(redis.set(k("ttl"), "v", ex=100), True)
    ttl = redis.ttl(k("ttl"))
    assert 0 < ttl <= 100, ttl
    eq(redis.incr(k("n")), 1)
    eq(redis.incrby(k("n"), 41), 42)
    eq(redis.incrbyfloat(k("f"), 1.5), 1.5)
    eq(redis.mset({k("m1"): "a", k("m2"): "b"}), True)
    eq(redis.mget(k("m1"), k("m2"), k("missing")), ["a", "b", None])
    eq(redis.delete(k("m1"), k("m2")), 2)
    eq(redis.exists(k("m1")), 0)
    eq(redis.get(k("missing")), None)


@check("emoji and unusual characters round-trip")
def _():
    values = ["😀🎉 héllo wörld", "日本語テキスト", 'quotes " and \\ backslash', "line\nbreak\ttab", "nul\x00byte", "OK", ""]
    for i, value in enumerate(values):
        redis.set(k(f"u{i}"), value)
        eq(redis.get(k(f"u{i}")), value)
    eq(redis.strlen(k("u0")), len(values[0].encode()))


@check("binary-unsafe bytes: stored via path form, read back exactly via base64")
def _():
    data = bytes([0xFF, 0xFE, 0x00, 0x41, 0xC3, 0x28])
    headers = {"Authorization": f"Bearer {TOKEN}"}
    key = urllib.parse.quote(k("bin"), safe="")
    r = httpx.post(f"{URL}/set/{key}", content=data, headers=headers)
    eq((r.status_code, r.json()), (200, {"result": "OK"}))
    r = httpx.post(URL, json=["GET", k("bin")], headers={**headers, "Upstash-Encoding": "base64"})
    eq(base64.b64decode(r.json()["result"]), data)
    eq(redis.strlen(k("bin")), len(data))


@check("JSON values (stored as text)")
def _():
    doc = {"name": "ann", "tags": ["a", "b"], "nested": {"n": 1.5, "ok": True, "none": None}, "emoji": "🙂"}
    redis.set(k("json"), json.dumps(doc))
    eq(json.loads(redis.get(k("json"))), doc)
    redis.rpush(k("list"), json.dumps({"id": 1}), json.dumps({"id": 2}))
    eq([json.loads(v) for v in redis.lrange(k("list"), 0, -1)], [{"id": 1}, {"id": 2}])


@check("sets")
def _():
    eq(redis.sadd(k("set"), "a", "b", "c", "😀"), 4)
    eq(redis.sadd(k("set"), "a"), 0)
    eq(redis.scard(k("set")), 4)
    eq(redis.sismember(k("set"), "😀"), True)
    eq(set(redis.smembers(k("set"))), {"a", "b", "c", "😀"})
    eq(redis.srem(k("set"), "a"), 1)
    redis.sadd(k("set2"), "b", "z")
    eq(set(redis.sinter(k("set"), k("set2"))), {"b"})


@check("hashes")
def _():
    eq(redis.hset(k("h"), values={"name": "ann", "count": 1}), 2)
    eq(redis.hget(k("h"), "name"), "ann")
    eq(redis.hincrby(k("h"), "count", 9), 10)
    eq(redis.hgetall(k("h")), {"name": "ann", "count": "10"})
    eq(redis.hmget(k("h"), "name", "nope"), ["ann", None])
    eq(redis.hdel(k("h"), "name"), 1)
    eq(redis.hexists(k("h"), "name"), False)


@check("sorted sets")
def _():
    eq(redis.zadd(k("z"), {"one": 1, "two": 2}), 2)
    eq(redis.zrange(k("z"), 0, -1, withscores=True), [("one", 1.0), ("two", 2.0)])
    eq(redis.zscore(k("z"), "two"), 2.0)


@check("pipeline: ordered results")
def _():
    p = redis.pipeline()
    p.set(k("p"), "v")
    p.get(k("p"))
    p.incr(k("pn"))
    p.sadd(k("ps"), "m")
    eq(p.exec(), [True, "v", 1, 1])
    bad = redis.pipeline()
    bad.get(k("p"))
    bad.incr(k("p"))
    try:
        bad.exec()
        raise AssertionError("a failing command in a pipeline must raise")
    except UpstashError as error:
        assert "not an integer" in str(error), error


@check("transactions (multi/exec)")
def _():
    tx = redis.multi()
    tx.set(k("t"), "1")
    tx.incr(k("t"))
    tx.get(k("t"))
    eq(tx.exec(), [True, 2, "2"])


@check("errors are raised as UpstashError")
def _():
    redis.set(k("e"), "text")
    try:
        redis.incr(k("e"))
        raise AssertionError("INCR on text must raise")
    except UpstashError as error:
        assert "not an integer" in str(error), error
    stranger = Redis(url=URL, token="wrong-token", allow_telemetry=False, rest_retries=0)
    try:
        stranger.get(k("e"))
        raise AssertionError("a wrong token must raise")
    except UpstashError as error:
        assert "WRONGPASS invalid or missing auth token" in str(error), error


@check("scripts: eval")
def _():
    eq(redis.eval("return ARGV[1]", [], ["echoed"]), "echoed")
    eq(redis.eval("return redis.call('INCRBY', KEYS[1], ARGV[1])", [k("sc")], ["5"]), 5)


@check("read-your-writes sync token is tracked")
def _():
    redis.set(k("ryw"), "1")
    token = getattr(redis, "_sync_token", None)
    assert token, f"sync token after a write: {token!r}"


@check("cleanup with scan + delete")
def _():
    cursor, keys = 0, []
    while True:
        cursor, batch = redis.scan(cursor, match=f"{PREFIX}*", count=1000)
        keys.extend(batch)
        if cursor == 0:
            break
    assert len(keys) > 10, keys
    eq(redis.delete(*keys), len(keys))


failed = results.count(False)
print(f"\nupstash-redis (Python) conformance: {len(results) - failed} passed, {failed} failed")
sys.exit(0 if failed == 0 else 1)
