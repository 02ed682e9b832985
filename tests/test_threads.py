"""A pool reached from two threads, as under Starlette's (and FastAPI's) TestClient, which runs
the app in a thread with its own event loop: a release in one thread wakes a waiter in the
other, and each loop's waiters keep their own timeout."""

from __future__ import annotations

import asyncio
import threading

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from mockpool import AcquireTimeout, MockPool, PoolClosedError, ServiceSpec


def _app(pool: MockPool, timeout: float | None) -> Starlette:
    async def use(request: Request) -> JSONResponse:
        try:
            async with pool.acquire("db", timeout=timeout) as db:
                db["thread"] = threading.get_ident()
                return JSONResponse({"ok": True})
        except AcquireTimeout as exc:
            return JSONResponse({"timeout": str(exc)}, status_code=503)

    return Starlette(routes=[Route("/use", use)])


def _closed_meanwhile(*args: object) -> None:
    """``call_soon_threadsafe`` of a loop that closed since the pool looked at it."""
    raise RuntimeError("Event loop is closed")


async def _until(predicate: object, what: str) -> None:
    """Wait for another thread to reach a state (bounded: a hang fails the test)."""
    for _ in range(1000):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting until {what}")


@pytest.mark.asyncio
async def test_a_release_in_the_test_thread_wakes_the_apps_waiter() -> None:
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="db", factory=dict, reset=dict.clear, max_size=1))
    async with pool:
        with TestClient(_app(pool, timeout=None)) as client:
            async with pool.acquire("db"):
                request = asyncio.ensure_future(asyncio.to_thread(client.get, "/use"))
                await _until(lambda: pool.stats("db").waiting == 1, "the app waits for 'db'")
            # Released here, in this thread's loop; the waiter is in the app's loop.
            response = await asyncio.wait_for(request, 10)
            assert response.json() == {"ok": True}
        pool.check_invariants()
        assert pool.stats("db").size == 1


@pytest.mark.asyncio
async def test_each_loop_keeps_its_own_waiters_timeouts() -> None:
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="db", factory=dict, max_size=1))
    async with pool:
        with TestClient(_app(pool, timeout=0.2)) as client:
            async with pool.acquire("db"):
                request = asyncio.ensure_future(asyncio.to_thread(client.get, "/use"))
                await _until(lambda: pool.stats("db").waiting == 1, "the app waits for 'db'")
                # A waiter of this loop arms this loop's timer; the app's must still fire.
                lease = pool.acquire("db", timeout=30)
                mine = asyncio.ensure_future(lease.__aenter__())
                await _until(lambda: pool.stats("db").waiting == 2, "two loops wait")
                response = await asyncio.wait_for(request, 10)
                assert response.status_code == 503
                assert "within 0.2 s" in response.json()["timeout"]
            assert await asyncio.wait_for(mine, 10) == {}  # served by the release above
            await lease.__aexit__(None, None, None)
        pool.check_invariants()
        stats = pool.stats("db")
        assert (stats.size, stats.timeouts) == (1, 1)


@pytest.mark.asyncio
async def test_a_creation_stuck_in_a_blocked_loop_is_taken_over_by_the_waiting_loop() -> None:
    """A creation spawned in this loop (``pool.expect``, as a ``mockpool`` marker does), then
    this loop blocked by a sync call into the app (``TestClient.get`` from an async test): the
    app's acquire, in TestClient's loop, runs the creation itself instead of waiting for ever."""
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="db", factory=dict, reset=dict.clear))
    async with pool:
        assert pool.expect(["db"]) == 1  # reserved, spawned here, not yet run
        assert pool.stats("db").creating == 1
        with TestClient(_app(pool, timeout=5.0)) as client:
            response = client.get("/use")  # blocks this loop until the app answers
        assert response.json() == {"ok": True}
        # This loop's copy of the creation runs now: it finds the ticket claimed, makes nothing.
        await pool.service_pools["db"].creations_settled()
        for _ in range(3):
            await asyncio.sleep(0)
        pool.check_invariants()
        stats = pool.stats("db")
        assert (stats.size, stats.creating, stats.created) == (1, 0, 1)


@pytest.mark.asyncio
async def test_a_waiting_loop_takes_over_one_pending_creation_per_waiter() -> None:
    """Four creations pending in this loop, which then blocks: the other loop's one waiter
    runs one of them itself, not all four (it ran sixteen factories of 50 ms before being
    served, when it took over every one)."""
    made_in: list[int] = []

    def factory() -> dict[str, int]:
        made_in.append(threading.get_ident())
        return {}

    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="db", factory=factory, reset=dict.clear))
    async with pool:
        assert pool.expect(["db"], count=4) == 4  # spawned in this loop, none run yet
        served = threading.Event()

        def other_loop() -> None:
            async def use() -> None:
                async with pool.acquire("db", timeout=5):
                    served.set()

            asyncio.run(use())

        thread = threading.Thread(target=other_loop)
        thread.start()
        assert served.wait(10)  # this loop blocked meanwhile
        thread.join(10)
        assert made_in.count(thread.ident or 0) == 1
        await pool.service_pools["db"].creations_settled()
        stats = pool.stats("db")
        assert (stats.created, stats.creating) == (4, 0)
        pool.check_invariants()


@pytest.mark.asyncio
async def test_a_creation_whose_loop_ends_is_still_run_by_the_loop_that_took_it_over() -> None:
    """Loop A starts a creation and ends before running it; loop B's waiter counted on it and
    spawned a claimer, but B was blocked until A had ended. A's end must leave the creation to
    B's claimer, not release it: with no supervisor nothing else would create, and B's
    acquire timed out."""
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="db", factory=dict, reset=dict.clear))
    a_started, b_queued, a_ended = threading.Event(), threading.Event(), threading.Event()
    outcome: list[object] = []

    def loop_a() -> None:
        async def start_then_end() -> None:
            assert pool.expect(["db"]) == 1
            a_started.set()
            assert b_queued.wait(10)  # A blocked: its creation does not run before it ends

        asyncio.run(start_then_end())
        a_ended.set()

    def loop_b() -> None:
        async def wait_while_blocked() -> None:
            lease = pool.acquire("db", timeout=5)
            entering = asyncio.ensure_future(lease.__aenter__())
            await asyncio.sleep(0)  # the acquire queues, counting on A's creation
            stats = pool.stats("db")
            assert (stats.waiting, stats.creating) == (1, 1)
            b_queued.set()
            assert a_ended.wait(10)  # B blocked until A's loop has closed
            outcome.append(await entering)
            await lease.__aexit__(None, None, None)

        assert a_started.wait(10)
        try:
            asyncio.run(wait_while_blocked())
        except Exception as exc:  # reported below
            outcome.append(exc)

    threads = [threading.Thread(target=loop_a), threading.Thread(target=loop_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        await asyncio.to_thread(thread.join, 10)
    assert len(outcome) == 1 and isinstance(outcome[0], dict), outcome
    stats = pool.stats("db")
    assert (stats.created, stats.creating) == (1, 0)
    pool.check_invariants()
    await pool.aclose()


@pytest.mark.asyncio
async def test_an_instance_delivered_to_a_loop_that_closes_before_it_runs_comes_back() -> None:
    """The release sets the other thread's waiter's future in that loop (a callback it sends
    there); that loop stops and is closed before it runs the callback (an app thread shutting
    down, its tasks not cancelled). The instance was leased to nobody for good: at
    ``max_size=1`` the next acquire timed out."""
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="db", factory=dict, max_size=1))
    other = asyncio.new_event_loop()
    queued, go_on = threading.Event(), threading.Event()
    tasks: list[asyncio.Task[object]] = []  # kept referenced: the waiter is not collected

    def stop_when_told() -> None:
        queued.set()
        go_on.wait()  # the release sends its callback meanwhile: it would run next step
        other.stop()

    def run_other() -> None:
        tasks.append(other.create_task(pool.acquire("db").__aenter__()))
        # In the step after the task's first (which queues it as a waiter):
        other.call_soon(other.call_soon, stop_when_told)
        other.run_forever()
        other.close()

    async with pool:
        held = pool.acquire("db")
        await held.__aenter__()
        thread = threading.Thread(target=run_other)
        thread.start()
        await asyncio.to_thread(queued.wait)
        assert pool.stats("db").waiting == 1
        await held.__aexit__(None, None, None)  # handed over, delivered into the other loop
        go_on.set()
        await asyncio.to_thread(thread.join)
        assert other.is_closed() and not tasks[0].done()
        async with pool.acquire("db", timeout=3):
            pass
        pool.check_invariants()
        assert pool.stats("db").idle == 1


@pytest.mark.asyncio
async def test_a_waiter_of_another_loop_cancelled_as_it_is_handed_the_instance_passes_it_on() -> None:
    """The other thread's waiter is cancelled in the same step of its loop as the delivery
    arrives (the cancel first): the instance goes back, the waiter sees its cancellation."""
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="db", factory=dict, max_size=1))
    other = asyncio.new_event_loop()
    queued, go_on = threading.Event(), threading.Event()
    tasks: list[asyncio.Task[object]] = []

    def hold_the_loop() -> None:
        queued.set()
        go_on.wait()  # the cancel, then the delivery, arrive meanwhile: both run next step

    def run_other() -> None:
        tasks.append(other.create_task(pool.acquire("db").__aenter__()))
        other.call_soon(other.call_soon, hold_the_loop)
        other.run_until_complete(asyncio.wait([tasks[0]]))
        other.close()

    async with pool:
        held = pool.acquire("db")
        await held.__aenter__()
        thread = threading.Thread(target=run_other)
        thread.start()
        await asyncio.to_thread(queued.wait)
        assert pool.stats("db").waiting == 1
        other.call_soon_threadsafe(tasks[0].cancel)
        await held.__aexit__(None, None, None)  # handed over: delivered into the other loop
        go_on.set()
        await asyncio.to_thread(thread.join)
        assert tasks[0].cancelled()
        pool.check_invariants()
        stats = pool.stats("db")
        assert (stats.idle, stats.in_use, stats.waiting, stats.cancellations) == (1, 0, 0, 1)


@pytest.mark.asyncio
async def test_a_close_waiting_for_a_lease_of_the_apps_thread_goes_on_when_it_ends() -> None:
    """The close waits (up to ``close_timeout``) for the lease the app's thread holds. Its
    release, in the app's loop, set the close's ``asyncio.Event`` from that thread, which
    does not wake the close's loop: the close waited its whole ``close_timeout``."""
    pool = MockPool(supervise=False, close_timeout=30.0)
    pool.register(ServiceSpec(name="db", factory=dict, reset=dict.clear, max_size=1))
    held, release = threading.Event(), threading.Event()

    def app_thread() -> None:
        async def app() -> None:
            async with pool.acquire("db"):
                held.set()
                await asyncio.to_thread(release.wait)

        asyncio.run(app())

    await pool.start()
    thread = threading.Thread(target=app_thread)
    thread.start()
    try:
        await asyncio.to_thread(held.wait)
        closing = asyncio.ensure_future(pool.aclose())
        # Closing (no await between that state and its wait for the lease): it waits now.
        await _until(lambda: pool.closed, "the close waits for the app's lease")
        release.set()
        await asyncio.wait_for(closing, 10)  # was 30 s: close_timeout
    finally:
        release.set()
        await asyncio.to_thread(thread.join)
    stats = pool.stats("db")
    assert (stats.leaks, stats.size, stats.destroyed) == (0, 0, 1)


@pytest.mark.parametrize("ending", ["ends while waited for", "closes as it is looked at"])
@pytest.mark.asyncio
async def test_a_close_awaited_in_another_thread_is_finished_when_its_loop_ends_first(
    ending: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``aclose()`` finds the close under way in the app thread's loop and waits for it there.
    That loop then ended (``asyncio.run`` cancelled the close in its second instance's
    destroy): the wait returned as the close's task ended, and ``aclose()`` with it, leaving
    the pool "closing" with two instances never destroyed. Or it closed between the look and
    the wait: ``call_soon_threadsafe`` raised "Event loop is closed" out of ``aclose()``. The
    waiting call finishes the close."""
    made: list[int] = []
    destroyed: list[int] = []
    destroying, stop = threading.Event(), threading.Event()
    app_loops: list[asyncio.AbstractEventLoop] = []

    def factory() -> dict[str, int]:
        made.append(len(made) + 1)
        return {"id": made[-1]}

    async def destroy(instance: dict[str, int]) -> None:
        destroyed.append(instance["id"])
        if len(destroyed) == 1:
            destroying.set()
            await asyncio.Event().wait()  # until the app's loop ends

    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="db", factory=factory, destroy=destroy, min_size=3))

    def app_thread() -> None:
        async def app() -> None:
            app_loops.append(asyncio.get_running_loop())
            await pool.start()
            asyncio.ensure_future(pool.aclose())  # noqa: RUF006  (asyncio.run cancels it)
            await asyncio.to_thread(stop.wait, 10)

        asyncio.run(app())

    thread = threading.Thread(target=app_thread)
    thread.start()
    try:
        assert await asyncio.to_thread(destroying.wait, 10)
        if ending == "ends while waited for":
            closing = asyncio.ensure_future(pool.aclose())
            await asyncio.sleep(0)  # its first step: it waits for the app thread's close
            stop.set()  # the app's loop ends
            await asyncio.wait_for(closing, 10)
        else:
            with monkeypatch.context() as patch:
                # As a loop that closes between the look and the call does.
                patch.setattr(app_loops[0], "call_soon_threadsafe", _closed_meanwhile)
                await asyncio.wait_for(pool.aclose(), 10)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 10)
    assert repr(pool).startswith(f"<MockPool {pool.name!r} closed")  # was "closing"
    # The destroy cut short is run again (destroy hooks are idempotent), counted once.
    assert sorted(set(destroyed)) == [1, 2, 3]
    stats = pool.stats("db")
    assert (stats.size, stats.created, stats.destroyed) == (0, 3, 3)


@pytest.mark.parametrize("ending", ["release", "close"])
@pytest.mark.asyncio
async def test_a_waiter_whose_loop_closes_as_it_is_served_costs_nothing(
    ending: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The waiter's loop, in another thread, was running when the pool looked, and closed
    before the delivery was scheduled (the app's thread ending, TestClient's exit):
    ``call_soon_threadsafe`` raised "Event loop is closed" into the releasing test, leaving
    the instance handed to a waiter that will never run (or into the close, which stopped
    there). The instance goes to the next waiter, or idle, instead; the close goes on."""
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="db", factory=dict, max_size=1))
    other = asyncio.new_event_loop()
    queued, go_on = threading.Event(), threading.Event()
    tasks: list[asyncio.Task[object]] = []

    def hold_the_loop() -> None:
        queued.set()
        go_on.wait()  # running, not closed: what the pool sees

    def run_other() -> None:
        tasks.append(other.create_task(pool.acquire("db").__aenter__()))
        other.call_soon(other.call_soon, hold_the_loop)
        other.run_until_complete(asyncio.wait([tasks[0]]))
        other.close()

    await pool.start()
    held = pool.acquire("db")
    await held.__aenter__()
    thread = threading.Thread(target=run_other)
    thread.start()
    try:
        await asyncio.to_thread(queued.wait)
        assert pool.stats("db").waiting == 1
        with monkeypatch.context() as patch:
            # As a loop that closes between the look and the delivery does.
            patch.setattr(other, "call_soon_threadsafe", _closed_meanwhile)
            if ending == "release":
                await held.__aexit__(None, None, None)  # was RuntimeError: Event loop is closed
            else:
                closing = asyncio.ensure_future(pool.aclose())
                for _ in range(10):  # the close's first step fails the waiters at once
                    if pool.closed:
                        break
                    await asyncio.sleep(0)
        if ending == "release":
            stats = pool.stats("db")
            assert (stats.idle, stats.in_use, stats.waiting) == (1, 0, 0)
            pool.check_invariants()
            async with asyncio.timeout(5):
                async with pool.acquire("db", timeout=2):
                    pass
        else:
            assert pool.stats("db").waiting == 0
            await held.__aexit__(None, None, None)
            await asyncio.wait_for(closing, 5)  # was RuntimeError: Event loop is closed
            assert pool.stats("db").destroyed == 1
    finally:
        other.call_soon_threadsafe(tasks[0].cancel)  # that waiter's loop is in fact open
        go_on.set()
        await asyncio.to_thread(thread.join, 10)
        await pool.aclose()
    pool.check_invariants()


@pytest.mark.asyncio
async def test_a_close_goes_on_when_another_threads_loop_closes_as_its_runtime_is_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The close ends the runtimes of other threads' loops that are still open, by scheduling
    their cancel there. A loop that closed since the close looked (the app's thread ending)
    made ``call_soon_threadsafe`` raise "Event loop is closed" out of the close, which
    stopped before the pool was closed. That runtime needs no ending: its loop is gone."""
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="db", factory=dict, max_size=1))
    other = asyncio.new_event_loop()
    ready, go_on = threading.Event(), threading.Event()

    async def use_then_hold_the_loop() -> None:
        async with pool.acquire("db"):  # a creation: the runtime of this loop runs it
            pass
        ready.set()
        go_on.wait()  # running, not closed: what the close sees

    def run_other() -> None:
        other.run_until_complete(use_then_hold_the_loop())
        other.close()

    thread = threading.Thread(target=run_other)
    thread.start()
    try:
        await asyncio.to_thread(ready.wait, 10)
        assert other in pool._runtimes
        with monkeypatch.context() as patch:
            # As a loop that closes between the look and the call does.
            patch.setattr(other, "call_soon_threadsafe", _closed_meanwhile)
            await asyncio.wait_for(pool.aclose(), 5)  # was RuntimeError: Event loop is closed
    finally:
        go_on.set()
        await asyncio.to_thread(thread.join, 10)
    assert repr(pool).startswith(f"<MockPool {pool.name!r} closed")
    stats = pool.stats("db")
    assert (stats.size, stats.created, stats.destroyed) == (0, 1, 1)


@pytest.mark.asyncio
async def test_a_creation_ending_as_another_threads_loop_closes_still_wakes_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``creations_settled`` (what ``warm`` and ``start`` wait on) is waited on in two loops;
    the other thread's closes as the creation ends, between the look and the wake-up:
    ``call_soon_threadsafe`` raised "Event loop is closed" out of the creation, whose runtime
    then ended with an error, and the waiter of this loop, dropped with the rest of the list,
    waited for ever."""
    gate = asyncio.Event()

    async def factory() -> dict[str, int]:
        await gate.wait()
        return {}

    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="db", factory=factory, max_size=1))
    svc = pool.service_pools["db"]
    other = asyncio.new_event_loop()
    queued, go_on = threading.Event(), threading.Event()

    def hold_the_loop() -> None:
        queued.set()
        go_on.wait()  # running, not closed: what the creation sees as it ends

    tasks: list[asyncio.Task[None]] = []

    def run_other() -> None:
        tasks.append(other.create_task(svc.creations_settled()))
        other.call_soon(other.call_soon, hold_the_loop)
        other.run_until_complete(asyncio.wait(tasks))
        other.close()

    await pool.start()
    assert pool.expect(["db"]) == 1  # a creation, in this loop's runtime
    thread = threading.Thread(target=run_other)
    thread.start()
    try:
        await asyncio.to_thread(queued.wait, 10)
        settled = asyncio.ensure_future(svc.creations_settled())
        await asyncio.sleep(0)
        assert len(svc._settled_waiters) == 2  # the other thread's first
        with monkeypatch.context() as patch:
            patch.setattr(other, "call_soon_threadsafe", _closed_meanwhile)
            gate.set()
            await asyncio.wait_for(settled, 5)  # was a wait for ever
    finally:
        other.call_soon_threadsafe(tasks[0].cancel)  # that waiter's loop is in fact open
        go_on.set()
        await asyncio.to_thread(thread.join, 10)
    async with asyncio.timeout(5):
        async with pool.acquire("db", timeout=2):  # the runtime lives on
            pass
    await pool.aclose()


@pytest.mark.parametrize("ending", ["release", "close"])
@pytest.mark.asyncio
async def test_a_waiter_whose_loop_starts_as_it_is_served_is_woken(
    ending: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The waiter's loop, in another thread, was not running when the pool looked (between
    two ``run_until_complete`` calls), then started and fell asleep waiting for events before
    the delivery: the future was set from this thread with the loop's ``call_soon``, which
    does not wake a sleeping loop. The waiter slept on with its instance, or without the
    news that the pool closed (for ever with ``timeout=None``). The delivery wakes the loop
    whatever it was doing."""
    pool = MockPool(supervise=False)
    pool.register(ServiceSpec(name="db", factory=dict, max_size=1))
    other = asyncio.new_event_loop()
    queued, woken = threading.Event(), threading.Event()
    outcome: list[str] = []
    tasks: list[asyncio.Task[object]] = []

    async def wait() -> None:
        try:
            async with pool.acquire("db", timeout=None):
                outcome.append("served")
        except PoolClosedError:
            outcome.append("closed")
        finally:
            woken.set()

    def run_other() -> None:
        tasks.append(other.create_task(wait()))
        other.call_soon(other.call_soon, queued.set)  # queued, then asleep with nothing to do
        other.run_until_complete(asyncio.wait(tasks))
        other.close()

    await pool.start()
    held = pool.acquire("db")
    await held.__aenter__()
    thread = threading.Thread(target=run_other)
    thread.start()
    try:
        await asyncio.to_thread(queued.wait, 10)
        assert pool.stats("db").waiting == 1
        with monkeypatch.context() as patch:
            # As a loop that started running (and fell asleep) after the look does.
            patch.setattr(other, "is_running", lambda: False)
            if ending == "release":
                await held.__aexit__(None, None, None)
            else:
                closing = asyncio.ensure_future(pool.aclose())
                for _ in range(10):  # the close's first step fails the waiters at once
                    if pool.closed:
                        break
                    await asyncio.sleep(0)
        assert await asyncio.to_thread(woken.wait, 5)  # was asleep
        assert outcome == ["served" if ending == "release" else "closed"]
        if ending == "close":
            await held.__aexit__(None, None, None)
            await asyncio.wait_for(closing, 5)
    finally:
        if not woken.is_set():
            other.call_soon_threadsafe(tasks[0].cancel)
        await asyncio.to_thread(thread.join, 10)
        await pool.aclose()
    pool.check_invariants()
