"""The measured effect of the redis and httpx recipes in docs/recipes.md.

(b) **A library that builds its own redis pool** (a job queue, like docket): each test makes a
queue named after the test, enqueues and runs a few jobs, and in teardown clears the queue
(``SCAN MATCH <name>:*``, then ``DEL``), which leaves the jobs' run records (kept for a day, as
result keys are). *Before*: one process-wide ``FakeServer`` that nobody resets, so those
records pile up and every teardown scans more keys. *After*: a pooled ``redis_service``
lease hands its ``FakeServer`` (``server_of(redis)``) to the queue's own connection pool; the
release resets the server. Printed: teardown time per test as the run goes on.

(c) **A transport handed to a library that wraps it** (an HTTP cache, like hishel): each test
builds the library's caching transport over a mock transport with a per-test route, and
fetches twice (the second fetch comes from the cache). *Before*: a new ``httpx.MockTransport``
per test, over a routing table built per test. *After*: an ``http_transport_service`` lease
(respx routes built once per instance, the test's route added for its lease, rolled back with
the call records on release). Printed: time per test, setup + body + teardown.

Run: ``python benchmarks/recipes.py`` (``--tests N`` for (b), ``--quick``). The before side of (b)
grows quadratically with ``--tests``: 1,000 tests take about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import redis.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mockpool import MockPool
from mockpool.services import http_transport_service, redis_service, server_of

# == (b) a job queue that builds its own connection pool ========================================


#: The library keeps one FakeServer per memory:// URL for the life of the process (the shape of
#: docket's ``_redis.py``); every queue on a URL shares it.
_memory_servers: dict[str, fakeredis.FakeServer] = {}


def connection_pool_from_url(url: str) -> redis.asyncio.ConnectionPool:
    if url.startswith("memory://"):
        server = _memory_servers.setdefault(url, fakeredis.FakeServer())
        return redis.asyncio.ConnectionPool(
            connection_class=fakeredis.FakeAsyncRedisConnection, server=server
        )
    return redis.asyncio.ConnectionPool.from_url(url)


class JobQueue:
    """The library under test: it builds its own connection pool from a URL."""

    def __init__(self, name: str, url: str = "memory://") -> None:
        self.name = name
        self.redis = redis.asyncio.Redis(connection_pool=connection_pool_from_url(url))

    async def enqueue(self, job_id: int, payload: str) -> None:
        await self.redis.xadd(f"{self.name}:stream", {"id": job_id, "payload": payload})
        await self.redis.hset(f"{self.name}:runs:{job_id}", mapping={"state": "queued", "payload": payload})

    async def work(self) -> int:
        done = 0
        entries: Any = await self.redis.xrange(f"{self.name}:stream")
        for entry_id, fields in entries:
            run = f"{self.name}:runs:{fields[b'id'].decode()}"
            await self.redis.hset(run, "state", "done")
            await self.redis.expire(run, 86_400)  # results are kept for a day
            await self.redis.xdel(f"{self.name}:stream", entry_id)
            done += 1
        return done

    async def clear(self) -> None:
        """Drop queued work: the stream and schedules; run records stay until they expire."""
        async for key in self.redis.scan_iter(match=f"{self.name}:*"):
            if b":runs:" not in key:
                await self.redis.delete(key)

    async def aclose(self) -> None:
        await self.redis.aclose(close_connection_pool=True)


async def queue_test(queue: JobQueue, jobs: int) -> None:
    for i in range(jobs):
        await queue.enqueue(i, f"payload-{i}")
    assert await queue.work() == jobs
    assert await queue.redis.hget(f"{queue.name}:runs:0", "state") == b"done"


@asynccontextmanager
async def queue_before(test: int) -> AsyncIterator[JobQueue]:
    # Before: the library's process-wide memory:// server, never reset; a name per test.
    queue = JobQueue(f"test-{test}")
    try:
        yield queue
    finally:
        await queue.clear()
        await queue.aclose()


@asynccontextmanager
async def queue_after(mockpool: MockPool) -> AsyncIterator[JobQueue]:
    async with mockpool.acquire("redis") as r:
        # After: for this test, the library's memory:// server is the leased one.
        shared = _memory_servers.get("memory://")
        _memory_servers["memory://"] = server_of(r)
        queue = JobQueue("jobs")
        try:
            yield queue
        finally:
            await queue.clear()
            await queue.aclose()
            if shared is None:
                del _memory_servers["memory://"]
            else:
                _memory_servers["memory://"] = shared


async def teardown_times(
    make: Callable[[int], Any], tests: int, jobs: int
) -> tuple[list[float], list[float]]:
    """Per test: the fixture's teardown time (the queue's clear and close, and the lease's
    release with its reset), and the time of the whole test."""
    teardowns: list[float] = []
    totals: list[float] = []
    for test in range(tests):
        start = time.perf_counter()
        cm = make(test)
        queue = await cm.__aenter__()
        await queue_test(queue, jobs)
        t0 = time.perf_counter()
        await cm.__aexit__(None, None, None)
        end = time.perf_counter()
        teardowns.append(end - t0)
        totals.append(end - start)
    return teardowns, totals


async def recipe_b(tests: int, jobs: int) -> dict[str, Any]:
    before = await teardown_times(queue_before, tests, jobs)
    keys_left = len(_memory_servers["memory://"].dbs[0])
    pool = MockPool()
    pool.register(redis_service())
    async with pool:
        after = await teardown_times(lambda _test: queue_after(pool), tests, jobs)
    return {"before": before, "after": after, "keys_left": keys_left}


# == (c) a caching transport over a mock transport ==============================================


class CachingTransport(httpx.AsyncBaseTransport):
    """The library under test: it wraps whatever transport it is given, and caches GETs."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.inner = transport
        self.store: dict[str, tuple[int, bytes, list[tuple[str, str]]]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = str(request.url)
        if request.method == "GET" and key in self.store:
            status, body, headers = self.store[key]
            return httpx.Response(status, content=body, headers=headers, extensions={"from_cache": True})
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        if request.method == "GET" and response.status_code == 200:
            self.store[key] = (response.status_code, body, list(response.headers.items()))
        return httpx.Response(response.status_code, content=body, headers=response.headers)

    async def aclose(self) -> None:
        await self.inner.aclose()


ROUTES: dict[str | tuple[str, str], Any] = {
    f"GET /api/items/{i}": {"id": i, "name": f"item {i}"} for i in range(50)
}


def routing_handler(routes: dict[str | tuple[str, str], Any]) -> Callable[[httpx.Request], httpx.Response]:
    """What a suite without a pool builds per test: a router over its canned answers."""
    table = {tuple(str(key).split(" ", 1)): answer for key, answer in routes.items()}

    def handle(request: httpx.Request) -> httpx.Response:
        answer = table.get((request.method, request.url.path))
        return httpx.Response(404) if answer is None else httpx.Response(200, json=answer)

    return handle


def per_test_handler(request: httpx.Request) -> httpx.Response | None:
    # This test's own answer; None lets the routes answer.
    return httpx.Response(200, json={"fresh": True}) if request.url.path == "/api/fresh" else None


async def cache_test(transport: httpx.AsyncBaseTransport) -> None:
    cache = CachingTransport(transport)
    async with httpx.AsyncClient(transport=cache, base_url="http://api") as client:
        first = await client.get("/api/items/7")
        second = await client.get("/api/items/7")
        fresh = await client.get("/api/fresh")
    assert first.json() == second.json() == {"id": 7, "name": "item 7"}
    assert second.extensions.get("from_cache") is True
    assert fresh.json() == {"fresh": True}


async def http_before() -> None:
    route = routing_handler(ROUTES)

    def handler(request: httpx.Request) -> httpx.Response:
        return per_test_handler(request) or route(request)

    await cache_test(httpx.MockTransport(handler))


def http_after(pool: MockPool) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        async with pool.acquire("http_transport") as fake:
            fake.router.get("/api/fresh").respond(json={"fresh": True})  # this test's own route
            await cache_test(fake.transport)
            assert fake.calls.call_count == 2  # the cached GET never reached the transport

    return run


async def per_test(run: Callable[[], Awaitable[None]], tests: int) -> float:
    for _ in range(20):
        await run()
    start = time.perf_counter()
    for _ in range(tests):
        await run()
    return (time.perf_counter() - start) / tests


async def recipe_c(tests: int, rounds: int) -> dict[str, float]:
    pool = MockPool()
    pool.register(http_transport_service(routes=ROUTES, intercept=False))
    before, after = [], []
    async with pool:
        for _ in range(rounds):
            before.append(await per_test(http_before, tests))
            after.append(await per_test(http_after(pool), tests))
    return {"before_s": min(before), "after_s": min(after)}


# == report =====================================================================================


def _window(values: list[float], end: int, width: int = 10) -> str:
    chunk = values[max(0, end - width) : end]
    return f"{1000 * statistics.mean(chunk):8.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tests", type=int, default=1000, help="tests in the redis run (1000)")
    parser.add_argument("--jobs", type=int, default=5, help="jobs each redis test runs (5)")
    parser.add_argument("--quick", action="store_true", help="a short run (300 redis tests)")
    args = parser.parse_args()
    tests = 300 if args.quick else args.tests

    b = asyncio.run(recipe_b(tests, args.jobs))
    checkpoints = sorted({c for c in (10, 100, 250, 500, 1000, 2000, tests) if c <= tests})
    print(f"(b) job queue on its own connection pool: {tests} tests x {args.jobs} jobs")
    print("    per test, ms (mean of the 10 tests ending at test #)")
    print(f"    {'test #':>18}" + "".join(f"{c:>9}" for c in checkpoints))
    for what, index in (("teardown", 0), ("whole test", 1)):
        for label in ("before", "after"):
            print(
                f"    {what + ' ' + label:>18}"
                + "".join(f" {_window(b[label][index], c)}" for c in checkpoints)
            )
    before_total, after_total = sum(b["before"][1]), sum(b["after"][1])
    print(
        f"    whole run: before {before_total:.2f} s, after {after_total:.2f} s "
        f"({before_total / after_total:.1f}x); keys left on the shared server: {b['keys_left']}"
    )

    c = asyncio.run(recipe_c(300 if args.quick else 1000, 3))
    print("(c) caching transport over a mock transport: per test (setup, 3 requests, teardown)")
    print(
        f"    before {1e6 * c['before_s']:.0f} us, after {1e6 * c['after_s']:.0f} us "
        f"({c['before_s'] / c['after_s']:.2f}x)"
    )


if __name__ == "__main__":
    main()
