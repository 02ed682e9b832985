"""The measured effect of the respx migration recipe in docs/recipes.md (d).

A respx test module, before and after, with the same test bodies. The code under test builds
its own ``httpx.AsyncClient`` (no injection point); the tests read the routes and calls through
a ``respx_mock`` fixture.

- *Before*: respx's way. The fixture opens ``respx.mock(base_url=API)``, declares the suite's
  routes on it and patches httpx, per test.
- *After*: ``http_service("users_api", routes=declare, base_url=API)`` in a pool; the fixture
  yields the lease's ``api.router``. The routes are declared once per pooled instance, httpx is
  patched once, and each request goes to the router of the lease its task holds.

Printed:

1. per test, one at a time (fixture setup, body, teardown), the three test bodies in turn;
2. ``--concurrent`` tests at once in one event loop, as pytest-asyncio-cooperative runs them:
   how many fail. respx's routers are process-wide and a request goes to the first that
   matches, so concurrent tests answer each other's requests and count each other's calls.
   The code under test awaits something else (a token cache) before each request, as real code
   does, which is where the tests interleave;
3. what a client costs the code under test: ``httpx.AsyncClient()`` (its SSL context) against
   a client over a given transport (what the lease's ``api.client`` is).

Run: ``python benchmarks/respx_migration.py`` (``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mockpool import MockPool
from mockpool.services import http_service

API = "https://users.example.com/v1"

# == the code under test =======================================================================


class UsersClient:
    """The code under test: it builds its own client, once, as an application does."""

    def __init__(self) -> None:
        self._http = httpx.AsyncClient(base_url=API)

    async def _token(self) -> str:
        await asyncio.sleep(0)  # a token cache: the await where concurrent tests interleave
        return "t0k3n"

    async def get(self, user_id: int) -> Any:
        response = await self._http.get(f"/users/{user_id}", headers={"authorization": await self._token()})
        response.raise_for_status()
        return response.json()

    async def create(self, name: str) -> Any:
        response = await self._http.post(
            "/users", json={"name": name}, headers={"authorization": await self._token()}
        )
        response.raise_for_status()
        return response.json()


# == the suite's routes and its three tests (the same bodies before and after) ================


def declare(router: respx.Router) -> None:
    router.get("/users/1", name="user").respond(json={"id": 1, "name": "Ada"})
    router.post("/users", name="create").respond(201, json={"id": 2})


async def test_get_user(respx_mock: respx.Router, users: UsersClient) -> None:
    assert (await users.get(1))["name"] == "Ada"
    assert respx_mock["user"].call_count == 1


async def test_missing_user(respx_mock: respx.Router, users: UsersClient) -> None:
    respx_mock.get("/users/404").respond(404)
    with pytest.raises(httpx.HTTPStatusError):
        await users.get(404)
    assert respx_mock.calls.call_count == 1


async def test_create_conflict(respx_mock: respx.Router, users: UsersClient) -> None:
    respx_mock["create"].side_effect = [httpx.Response(201, json={"id": 2}), httpx.Response(409)]
    assert (await users.create("Bob"))["id"] == 2
    with pytest.raises(httpx.HTTPStatusError):
        await users.create("Bob")
    assert respx_mock["create"].call_count == 2


TESTS = (test_get_user, test_missing_user, test_create_conflict)
Fixture = Callable[[], AbstractAsyncContextManager[respx.Router]]

# == the fixture, before and after =============================================================


@asynccontextmanager
async def respx_mock_before() -> AsyncIterator[respx.Router]:
    with respx.mock(base_url=API, assert_all_called=False) as mock:
        declare(mock)
        yield mock


def respx_mock_after(pool: MockPool) -> Fixture:
    @asynccontextmanager
    async def fixture() -> AsyncIterator[respx.Router]:
        async with pool.acquire("users_api") as api:
            yield api.router

    return fixture


async def run_test(fixture: Fixture, test: Callable[..., Awaitable[None]], users: UsersClient) -> str | None:
    """One test with its fixture; what failed, or None."""
    try:
        async with fixture() as mock:
            await test(mock, users)
    except Exception as exc:
        first_line = str(exc).partition("\n")[0]
        return f"{test.__name__}: {type(exc).__name__}: {first_line[:90]}"
    return None


# == measurements ==============================================================================


async def per_test(fixture: Fixture, users: UsersClient, tests: int) -> float:
    for i in range(30):
        assert await run_test(fixture, TESTS[i % 3], users) is None
    gc.collect()
    start = time.perf_counter()
    for i in range(tests):
        failed = await run_test(fixture, TESTS[i % 3], users)
        assert failed is None, failed
    return (time.perf_counter() - start) / tests


async def concurrently(fixture: Fixture, users: UsersClient, tests: int) -> list[str]:
    results = await asyncio.gather(*(run_test(fixture, TESTS[i % 3], users) for i in range(tests)))
    return [failure for failure in results if failure is not None]


def client_costs(rounds: int) -> tuple[float, float]:
    transport = httpx.MockTransport(lambda request: httpx.Response(204))

    def best(make: Callable[[], object], count: int) -> float:
        return min(_timed(make, count) for _ in range(rounds))

    return best(httpx.AsyncClient, 10), best(
        lambda: httpx.AsyncClient(transport=transport, base_url=API), 500
    )


def _timed(make: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        make()
    return (time.perf_counter() - start) / count


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tests", type=int, default=3000, help="tests timed one at a time (3000)")
    parser.add_argument("--concurrent", type=int, default=300, help="tests run at once (300)")
    parser.add_argument("--quick", action="store_true", help="a short run")
    args = parser.parse_args()
    tests, rounds = (600, 2) if args.quick else (args.tests, 3)
    users = UsersClient()

    pool = MockPool()
    pool.register(http_service("users_api", routes=declare, base_url=API))
    async with pool:
        after = respx_mock_after(pool)
        before_s = min([await per_test(respx_mock_before, users, tests) for _ in range(rounds)])
        after_s = min([await per_test(after, users, tests) for _ in range(rounds)])
        before_failed = await concurrently(respx_mock_before, users, args.concurrent)
        after_failed = await concurrently(after, users, args.concurrent)
        size = pool.stats("users_api").size

    print(f"Python {sys.version.split()[0]}, httpx {httpx.__version__}, respx {respx.__version__}")
    print(f"1. per test, one at a time (best of {rounds} rounds of {tests:,} tests)")
    print(f"   before (respx.mock per test)  {before_s * 1e6:8.1f} us")
    print(f"   after (a pooled lease)        {after_s * 1e6:8.1f} us   ({before_s / after_s:.1f}x)")
    print(f"2. {args.concurrent} tests at once in one event loop")
    print(f"   before: {len(before_failed)} failed")
    for failure in before_failed[:3]:
        print(f"      {failure}")
    print(f"   after:  {len(after_failed)} failed ({size} pooled routers served them)")
    for failure in after_failed[:3]:
        print(f"      {failure}")
    default_s, given_s = client_costs(rounds)
    print("3. an httpx.AsyncClient for the code under test")
    print(f"   httpx.AsyncClient() (its own SSL context)  {default_s * 1e3:8.2f} ms")
    print(f"   over a given transport (api.client)        {given_s * 1e6:8.1f} us")
    await users._http.aclose()


if __name__ == "__main__":
    asyncio.run(main())
