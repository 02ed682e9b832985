"""The tests: what each of the stress suite's tests does, with its assertions.

A test is a coroutine ``body(use, case)``. ``use(name)`` is an async context manager giving a
:class:`Held` (a pool lease, or a fresh double in the baseline), so the same tests run on the
pool, on fresh doubles and under pytest. Every test checks the two halves of isolation on the
instance it got: it is as clean as a new one (nobody else's writes are visible) and its own
writes are visible, after yielding to the other tests in the middle.

``case.fault`` asks a test to misbehave on purpose (see :mod:`stress.faults`): raise inside the
lease (the error must come out unchanged) or discard the instance (recovery must take it).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .clients import PLEX_SECTIONS
from .graph import CACHE_KEYS, LIBRARY_ITEMS

__all__ = (
    "KINDS",
    "Case",
    "Held",
    "InjectedError",
    "Use",
    "make_cases",
    "run_case",
)

#: A fault a test is asked to commit itself.
TestFault = Literal["raise", "discard", "cancel"] | None


class InjectedError(Exception):
    """Raised on purpose inside a lease (``--faults``); must propagate unchanged."""


class Held(Protocol):
    """What a test holds: a pool :class:`~mockpool.Lease` or a fresh double (baseline)."""

    @property
    def instance(self) -> Any: ...
    @property
    def members(self) -> dict[str, Any]: ...
    @property
    def degraded(self) -> bool: ...
    @property
    def tier(self) -> str | None: ...
    def discard(self) -> None: ...


#: ``use(name)``: an async context manager holding one instance of the service ``name``.
Use = Callable[[str], AbstractAsyncContextManager[Held]]


@dataclass(frozen=True, slots=True)
class Case:
    """One test: its index, what it exercises, how long it holds, what it does wrong."""

    index: int
    kind: str
    #: Seconds slept in the middle of the lease (0: just yield to the loop).
    hold_s: float
    fault: TestFault = None
    #: With ``fault="cancel"``: the runner cancels the test this many seconds after its start.
    cancel_after_s: float = 0.0

    @property
    def id(self) -> str:
        return f"{self.index:05d}-{self.kind}"

    @property
    def token(self) -> str:
        return f"written-by-test-{self.index}"

    async def checkpoint(self, held: Held) -> None:
        """The middle of a lease: let the other tests run, then misbehave if asked to."""
        if self.hold_s > 0:
            await asyncio.sleep(self.hold_s)
        else:
            await asyncio.sleep(0)
        if self.fault == "raise":
            raise InjectedError(f"test {self.id}: exception injected inside the lease")
        if self.fault == "discard":
            held.discard()


async def on_stub(held: Held, case: Case) -> bool:
    """True (after the checkpoint) if ``held`` is an emergency stub (recovery tier 4, under
    ``--faults``): a stub answers mocks, so the test only checks that it is flagged degraded."""
    if held.tier != "stub":
        return False
    assert held.degraded, "an emergency stub was not flagged degraded"
    await case.checkpoint(held)
    return True


# == the tests, one per kind of use ===========================================================


async def cache_test(use: Use, case: Case) -> None:
    """The seed's cache (redis, str replies, 200 seeded keys): strings with TTL, hashes, counters."""
    async with use("cache") as held:
        if await on_stub(held, case):
            return
        redis = held.instance
        assert await redis.dbsize() == CACHE_KEYS, f"cache not pristine: {await redis.dbsize()} keys"
        seeded = f"plex:item:{case.index % CACHE_KEYS + 1}"
        assert json.loads(await redis.get(seeded))["ratingKey"] == case.index % CACHE_KEYS + 1
        key, tag = f"k:{case.index}", f"h:{case.index}"
        await redis.set(key, case.token, ex=60)
        await redis.hset(tag, mapping={"owner": str(case.index), "kind": case.kind})
        assert await redis.incrby("hits", case.index + 1) == case.index + 1
        await redis.set(seeded, case.token)
        await case.checkpoint(held)
        assert await redis.get(key) == case.token
        assert await redis.get(seeded) == case.token
        assert await redis.hgetall(tag) == {"owner": str(case.index), "kind": case.kind}
        assert 0 < await redis.ttl(key) <= 60
        assert sorted(await redis.keys("[kh]*")) == sorted([key, tag, "hits"])
        assert await redis.dbsize() == CACHE_KEYS + 3


async def redis_test(use: Use, case: Case) -> None:
    """The plain redis (bytes replies): lists, sets and a transaction."""
    async with use("redis") as held:
        if await on_stub(held, case):
            return
        redis = held.instance
        assert await redis.dbsize() == 0, "redis not clean"
        queue = f"q:{case.index}".encode()
        await redis.rpush(queue, b"a", str(case.index).encode())
        await redis.sadd(b"members", str(case.index).encode())
        async with redis.pipeline(transaction=True) as pipe:
            pipe.incr(b"counter")
            pipe.incr(b"counter")
            assert await pipe.execute() == [1, 2]
        await case.checkpoint(held)
        assert await redis.lrange(queue, 0, -1) == [b"a", str(case.index).encode()]
        assert await redis.smembers(b"members") == {str(case.index).encode()}
        assert await redis.get(b"counter") == b"2"
        assert await redis.dbsize() == 3


async def database_test(use: Use, case: Case) -> None:
    """The database (SQLite, 1,000 library items): the seed rows are there, nobody else's are."""
    async with use("database") as held:
        if await on_stub(held, case):
            return
        db = held.instance
        assert db.execute("select count(*) from users").fetchone() == (3,), "users not pristine"
        assert db.execute("select count(*) from sessions").fetchone() == (0,), "sessions not clean"
        assert db.execute("select count(*), max(rating_key) from library_items").fetchone() == (
            LIBRARY_ITEMS,
            LIBRARY_ITEMS,
        ), "library not pristine"
        assert db.execute("select count(*) from watch_history").fetchone() == (0,), "history not clean"
        user, item = f"t{case.index}", case.index % LIBRARY_ITEMS + 1
        with db:
            db.execute("insert into users (id, name, plan) values (?, ?, 'plus')", (user, case.token))
            db.execute("update users set plan = 'gold' where id = 'u2'")
            db.execute("update library_items set title = ? where rating_key = ?", (case.token, item))
            db.execute("insert into watch_history values (?, ?, 0)", (user, item))
        await case.checkpoint(held)
        rows = db.execute("select id, plan from users order by id").fetchall()
        assert rows == sorted([(user, "plus"), ("u1", "plus"), ("u2", "gold"), ("u3", "free")])
        assert db.execute("select name from users where id = ?", (user,)).fetchone() == (case.token,)
        watched = db.execute(
            "select i.title from watch_history h join library_items i using (rating_key)"
        ).fetchall()
        assert watched == [(case.token,)]


async def jwt_test(use: Use, case: Case) -> None:
    """The token service: sign, verify, revoke; an expired token is refused."""
    async with use("jwt") as held:
        if await on_stub(held, case):
            return
        jwt = held.instance
        assert jwt.revoked == set(), "revocations of another test are visible"
        token = jwt.sign({"sub": f"t{case.index}"}, expires_in=60)
        claims = jwt.verify(token)
        assert claims["sub"] == f"t{case.index}"
        expired = jwt.sign({"sub": "late"}, expires_in=-10)
        await case.checkpoint(held)
        try:
            jwt.verify(expired)
        except jwt.token_error:
            pass
        else:
            raise AssertionError("an expired token was accepted")
        assert jwt.revoke(token) == claims["jti"]
        assert jwt.revoked == {claims["jti"]}


async def plex_test(use: Use, case: Case) -> None:
    """The Plex client (an autospec'd 60-method PlexService): configure, call, check the calls."""
    async with use("plex") as held:
        if await on_stub(held, case):
            return
        plex = held.instance
        assert plex.mock_calls == [], f"plex has another test's calls: {plex.mock_calls[:3]}"
        assert not isinstance(plex.library_sections.return_value, list), "another test's answer"
        plex.library_sections.return_value = PLEX_SECTIONS
        plex.search.side_effect = lambda query, **kw: [{"title": query, "owner": case.index}]
        assert [s["title"] for s in await plex.library_sections()] == ["Movies", "TV Shows"]
        await plex.refresh_section("2", force=True)
        await case.checkpoint(held)
        assert await plex.search(case.token, limit=1) == [{"title": case.token, "owner": case.index}]
        try:
            await plex.refresh_section("2", "unexpected")
        except TypeError:
            pass  # the autospec checks signatures
        else:
            raise AssertionError("an autospec'd method accepted a wrong signature")
        plex.refresh_section.assert_awaited_once_with("2", force=True)
        plex.search.assert_awaited_once_with(case.token, limit=1)
        assert [c[0] for c in plex.method_calls] == ["library_sections", "refresh_section", "search"]


async def youtube_test(use: Use, case: Case) -> None:
    """The YouTube client (an autospec'd 60-method YouTubeService): a download's whole life."""
    async with use("youtube") as held:
        if await on_stub(held, case):
            return
        youtube = held.instance
        assert youtube.mock_calls == [], "youtube has another test's calls"
        video = f"v{case.index}"
        youtube.video.return_value = {"id": video, "title": f"Video {video}", "duration": "PT3M33S"}
        youtube.request_download.return_value = {"id": f"dl-{video}", "status": "queued"}
        youtube.download_status.side_effect = [{"status": "running"}, {"status": "done"}]
        assert (await youtube.video(video))["title"] == f"Video {video}"
        download = await youtube.request_download(video, format_id="137")
        await case.checkpoint(held)
        statuses = [(await youtube.download_status(download["id"]))["status"] for _ in range(2)]
        assert statuses == ["running", "done"]
        youtube.request_download.assert_awaited_once_with(video, format_id="137")
        assert youtube.download_status.await_count == 2
        assert youtube.watch_url(video) is not None and youtube.watch_url.call_count == 1


async def device_session_test(use: Use, case: Case) -> None:
    """The seed's DeviceSessionService (redis + jwt + database): a session's whole life."""
    async with use("device_session") as held:
        if await on_stub(held, case):
            return
        service = held.instance
        members: Mapping[str, Any] = held.members
        db = members["database"]
        assert db.execute("select count(*) from sessions").fetchone() == (0,), "sessions not clean"
        assert await service.redis.dbsize() == 0, "session redis not clean"
        assert members["jwt"].revoked == set(), "revocations of another test are visible"
        user, device = f"u{case.index}", f"d{case.index}"
        session = await service.create_session(user, device, ttl=120)
        found = await service.validate(session.token)
        assert found is not None and found.session_id == session.session_id
        await case.checkpoint(held)
        renewed = await service.refresh(session.token)
        assert await service.validate(session.token) is None, "a superseded token still works"
        again = await service.validate(renewed.token)
        assert again is not None and again.user_id == user and again.device_id == device
        assert await service.active_sessions(user) == [session.session_id]
        assert db.execute("select user_id from sessions").fetchall() == [(user,)]
        assert await service.revoke(session.session_id)
        assert await service.validate(renewed.token) is None
        assert await service.active_sessions(user) == []


async def dashboard_test(use: Use, case: Case) -> None:
    """The dashboard (database + cache + plex): a user's summary, cached library sections."""
    async with use("dashboard") as held:
        if await on_stub(held, case):
            return
        dashboard = held.instance
        db, plex = dashboard.db, dashboard.plex
        assert await dashboard.cache.get("plex:sections") is None, "another test's cache is visible"
        assert plex.mock_calls == [], "plex has another test's calls"
        plex.library_sections.return_value = [*PLEX_SECTIONS, {"key": "9", "title": case.token}]
        user = f"t{case.index}"
        with db:
            db.execute("insert into users (id, name, plan) values (?, ?, 'plus')", (user, case.token))
            db.execute(
                "insert into sessions (id, user_id, device_id, jti, created_at, expires_at) "
                "values (?, ?, 'tv', 'j', 0, 1e12)",
                (f"s{case.index}", user),
            )
        summary = await dashboard.summary(user)
        await case.checkpoint(held)
        assert summary == {
            "user": case.token,
            "plan": "plus",
            "sessions": 1,
            "sections": ["Movies", "TV Shows", case.token],
        }
        assert (await dashboard.summary("u1"))["sessions"] == 0
        plex.library_sections.assert_awaited_once_with()  # the second summary read the cache


async def watch_party_test(use: Use, case: Case) -> None:
    """Two services at once (youtube, then a device session): leases nest, in a fixed order."""
    async with use("youtube") as yt:
        if await on_stub(yt, case):
            return
        video = f"w{case.index}"
        yt.instance.video.return_value = {"id": video}
        assert (await yt.instance.video(video)) == {"id": video}
        async with use("device_session") as held:
            if await on_stub(held, case):
                return
            session = await held.instance.create_session(f"u{case.index}", "tv")
            await case.checkpoint(held)
            assert await held.instance.active_sessions(f"u{case.index}") == [session.session_id]
        yt.instance.video.assert_awaited_once_with(video)


#: Every kind of test and its weight in the mix (the seed's graph, groups weighted up).
KINDS: dict[str, tuple[Callable[[Use, Case], Awaitable[None]], int]] = {
    "cache": (cache_test, 2),
    "redis": (redis_test, 1),
    "database": (database_test, 2),
    "jwt": (jwt_test, 1),
    "plex": (plex_test, 1),
    "youtube": (youtube_test, 1),
    "device_session": (device_session_test, 3),
    "dashboard": (dashboard_test, 2),
    "watch_party": (watch_party_test, 1),
}

#: The services each kind acquires (members come with their group).
SERVICES: dict[str, tuple[str, ...]] = {
    "cache": ("cache",),
    "redis": ("redis",),
    "database": ("database",),
    "jwt": ("jwt",),
    "plex": ("plex",),
    "youtube": ("youtube",),
    "device_session": ("device_session",),
    "dashboard": ("dashboard",),
    "watch_party": ("youtube", "device_session"),
}


def make_cases(
    count: int,
    *,
    seed: int = 0,
    hold_s: float = 0.001,
    faults: Callable[[random.Random], TestFault] | None = None,
) -> list[Case]:
    """``count`` tests, the kinds interleaved by weight, hold times drawn from ``seed``.

    :param hold_s: mean hold time of a lease (exponentially distributed; 0: just yield).
    :param faults: draws the fault a test commits (``--faults``), or None for none.
    """
    rng = random.Random(seed)
    cycle = [kind for kind, (_, weight) in KINDS.items() for _ in range(weight)]
    cases = []
    for index in range(count):
        kind = cycle[index % len(cycle)]
        hold = min(rng.expovariate(1 / hold_s), 20 * hold_s) if hold_s > 0 else 0.0
        fault = faults(rng) if faults is not None else None
        cancel_after = rng.uniform(0.0, 0.05) if fault == "cancel" else 0.0
        cases.append(Case(index, kind, hold, fault, cancel_after))
    return cases


async def run_case(use: Use, case: Case) -> None:
    """Run one test; raises what the test raised (AssertionError on a broken expectation)."""
    body, _ = KINDS[case.kind]
    await body(use, case)
