"""The http double: a respx router per instance, the lease's client and transport, and
interception of clients the code builds itself, routed per task."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import respx
from respx.mocks import HTTPCoreMocker
from respx.models import AllMockedAssertionError

from mockpool import MockPool, MockPoolError, ServiceConfigError, ServiceSpec
from mockpool.services import (
    HttpDouble,
    MissingExtraError,
    TransportDouble,
    UnmatchedRequestError,
    http_service,
    http_transport_service,
)
from mockpool.services._http_lease import INTERCEPTOR, Answer

from ._helpers import pool_of

BASE = "https://api.test/v1"


async def _video(request: httpx.Request) -> dict[str, str]:
    return {"id": request.extensions["path_params"]["id"]}


SHORTHAND: dict[Any, Any] = {
    ("GET", "/items"): [{"id": 1}],
    "GET /videos/{id}": _video,
    "POST /items": (201, {"created": True}, {"location": "/items/2"}),
    "DELETE /items/{id}": 204,
    "/health": "ok",
    "GET /raw": httpx.Response(418, content=b"teapot"),
    "GET /files/{rest:path}": lambda request: request.extensions["path_params"]["rest"],
}


def _declare(router: respx.Router) -> None:
    router.get("/users/1", name="user").respond(json={"id": 1, "name": "Ada"})
    router.get(path__regex=r"^/users/(?P<user_id>\d+)/posts$", name="posts").mock(
        side_effect=lambda request, user_id: httpx.Response(200, json=[{"user": int(user_id)}])
    )
    router.post("/users", name="create").mock(
        side_effect=[httpx.Response(201, json={"id": 2}), httpx.Response(409, json={"error": "exists"})]
    )


# == routes ====================================================================================


@pytest.mark.asyncio
async def test_shorthand_routes_answer_in_every_supported_form() -> None:
    async with pool_of(http_service(routes=SHORTHAND, max_size=1)) as pool, pool.acquire("http") as api:
        assert isinstance(api, HttpDouble)
        assert (await api.get("/items")).json() == [{"id": 1}]
        assert (await api.get("/videos/abc")).json() == {"id": "abc"}
        created = await api.post("/items", json={"name": "x"})
        assert (created.status_code, created.json()) == (201, {"created": True})
        assert created.headers["location"] == "/items/2"
        assert (await api.delete("/items/1")).status_code == 204
        assert (await api.put("/health")).text == "ok"  # a bare path matches any method
        for _ in range(2):  # a static Response answers every request, not just the first
            raw = await api.get("/raw")
            assert (raw.status_code, raw.content) == (418, b"teapot")
        assert (await api.get("/files/a/b.txt")).text == "a/b.txt"
        assert [r.method for r in api.calls_to("GET", "/raw")] == ["GET", "GET"]
        assert api.calls.call_count == 8
        assert api.router["GET /videos/{id}"].call_count == 1  # shorthand routes are named by their key


@pytest.mark.asyncio
async def test_a_route_may_be_a_whole_url_that_names_its_host() -> None:
    """respx takes whole URLs (``respx.get("https://api.test/a")``): so do shorthand keys, with
    parameters, and they match that host only, whatever the query string."""
    routes = {
        "GET https://api.test/items": [{"id": 1}],
        "GET https://api.test/videos/{id}": _video,
        "https://cdn.test/{rest:path}": lambda request: request.extensions["path_params"]["rest"],
    }
    async with pool_of(http_service(routes=routes, max_size=1)) as pool, pool.acquire("http") as api:
        assert (await api.get("https://api.test/items?page=2")).json() == [{"id": 1}]
        assert (await api.get("https://api.test/videos/abc?t=1")).json() == {"id": "abc"}
        assert (await api.post("https://cdn.test/a/b.png")).text == "a/b.png"
        with pytest.raises(UnmatchedRequestError):
            await api.get("https://other.test/items")
        with pytest.raises(UnmatchedRequestError):
            await api.get("https://api.test/videos/abc/comments")
        assert api.router["GET https://api.test/videos/{id}"].call_count == 1
        assert [str(r.url) for r in api.calls_to("GET", "https://api.test/items")] == [
            "https://api.test/items?page=2"
        ]
        assert len(api.calls_to("GET", "https://api.test/videos/abc")) == 1  # its query aside


@pytest.mark.asyncio
async def test_a_whole_url_route_names_its_own_host_even_with_a_base_url() -> None:
    """services.md: a whole-URL key is "for code that calls several hosts", so the service's
    base_url must not be merged into it. respx merged the base into a route with parameters
    (a url regex has no host lookup), so "GET https://cdn.test/v/{id}" never matched."""
    routes = {
        "GET /users/{id}": {"own": True},
        "GET https://cdn.test/v/{id}": lambda request: request.extensions["path_params"],
        "GET https://cdn.test/plain": "plain",
    }
    spec = http_service("api", routes=routes, base_url=BASE, max_size=1)
    async with pool_of(spec) as pool, pool.acquire("api") as api:
        assert (await api.get("https://cdn.test/v/9?t=1")).json() == {"id": "9"}
        assert (await api.get("https://cdn.test/plain")).text == "plain"
        assert (await api.get("/users/1")).json() == {"own": True}  # relative to base_url
        with pytest.raises(UnmatchedRequestError):
            await api.get("https://other.test/v/9")  # the host the key names, no other


def test_a_route_path_that_is_neither_a_path_nor_a_url_is_refused_when_defined() -> None:
    with pytest.raises(ValueError, match=r"route 'GET videos/1': the path must start with '/'"):
        http_service(routes={"GET videos/1": 200})


@pytest.mark.asyncio
async def test_routes_declared_with_respx_answer_and_count_their_calls() -> None:
    spec = http_service("api", routes=_declare, base_url=BASE, max_size=1)
    async with pool_of(spec) as pool, pool.acquire("api") as api:
        assert (await api.get("/users/1")).json() == {"id": 1, "name": "Ada"}
        assert (await api.get("/users/7/posts")).json() == [{"user": 7}]
        statuses = [(await api.post("/users", json={})).status_code for _ in range(2)]
        assert statuses == [201, 409]  # a sequence of side effects
        assert api.router["user"].called and api.router["create"].call_count == 2
        assert str(api.calls.last.request.url) == f"{BASE}/users"
        assert str(api.client.base_url) == f"{BASE}/"


@pytest.mark.asyncio
async def test_base_url_scopes_the_routes_to_the_service() -> None:
    spec = http_service("api", routes=_declare, base_url=BASE, max_size=1)
    async with pool_of(spec) as pool, pool.acquire("api") as api:
        with pytest.raises(UnmatchedRequestError):
            await api.client.get("https://other.test/v1/users/1")


@pytest.mark.asyncio
async def test_an_unmatched_request_raises_as_respx_does_naming_the_service_and_the_fix() -> None:
    async with (
        pool_of(http_service("api", routes=_declare, base_url=BASE)) as pool,
        pool.acquire("api") as api,
    ):
        with pytest.raises(UnmatchedRequestError) as caught:
            await api.get("/nowhere")
        assert isinstance(caught.value, AllMockedAssertionError)  # what respx raises
        assert isinstance(caught.value, AssertionError)
        assert str(caught.value) == (
            f"service 'api': no route matches GET {BASE}/nowhere; routes: user, posts, create; add one for "
            "this lease with api.router.get('/nowhere').respond(...), declare it in "
            "http_service('api', routes=...), or pass on_unmatched='404'"
        )


@pytest.mark.asyncio
async def test_on_unmatched_404_answers_with_the_routes() -> None:
    spec = http_service("plex", routes={"GET /a": {}}, on_unmatched="404")
    async with pool_of(spec) as pool, pool.acquire("plex") as plex:
        response = await plex.get("/b")
        assert response.status_code == 404
        assert response.json() == {
            "error": "service 'plex': no route matches GET http://testserver/b",
            "routes": ["GET /a"],
        }
        assert plex.calls.call_count == 1


@pytest.mark.asyncio
async def test_bad_answers_say_what_a_route_may_answer() -> None:
    with pytest.raises(
        TypeError, match=r"^service 'http': the route 'GET /x' answers a float; answer an httpx"
    ):
        http_service(routes={"GET /x": 3.5})  # a static answer: refused when the service is defined
    async with (
        pool_of(http_service(routes={"GET /x": lambda request: 3.5})) as pool,
        pool.acquire("http") as api,
    ):
        with pytest.raises(
            TypeError, match=r"the answer to GET /x answers a float; answer an httpx.Response"
        ):
            await api.get("/x")


def test_missing_httpx_or_respx_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("httpx", "respx"):
        with monkeypatch.context() as patched:
            patched.setitem(sys.modules, module, None)
            with pytest.raises(
                MissingExtraError, match=rf"'{module}' package.*pip install 'mockpool\[http\]'"
            ):
                http_service()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(
        ServiceConfigError, match=r"^service 'http': on_unmatched='ignore' must be 'raise' or '404'$"
    ) as caught:
        http_service(on_unmatched="ignore")  # type: ignore[arg-type]
    assert caught.value.field == "on_unmatched"
    with pytest.raises(TypeError, match=r"routes=\['GET /a'\] must be a mapping"):
        http_service(routes=["GET /a"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not JSON serializable"):  # the declaration runs once, now
        http_service(routes=lambda router: router.get("/a").respond(json=object()))


# == each lease starts from the declared state =================================================


@pytest.mark.asyncio
async def test_what_a_lease_changes_on_the_router_is_gone_in_the_next() -> None:
    async with pool_of(http_service("api", routes=_declare, base_url=BASE, max_size=1)) as pool:
        async with pool.acquire("api") as api:
            declared = api.router
            api.router.get("/lease").respond(204)
            api.router["user"].respond(500)
            api.router["create"].side_effect = httpx.ConnectError
            assert (await api.get("/lease")).status_code == 204
            assert (await api.get("/users/1")).status_code == 500
            with pytest.raises(httpx.ConnectError):
                await api.post("/users")
            api.on_unmatched = "404"
        async with pool.acquire("api") as again:
            assert again is api
            assert api.router is declared  # rolled back (respx), not rebuilt
            assert api.calls.call_count == 0 and not api.router["user"].called
            assert [route.name for route in api.router.routes] == ["user", "posts", "create"]
            assert (await api.get("/users/1")).status_code == 200
            assert (await api.post("/users")).status_code == 201
            with pytest.raises(UnmatchedRequestError):
                await api.get("/lease")


@pytest.mark.asyncio
async def test_each_lease_gets_a_new_client_and_the_old_one_is_ended() -> None:
    """A closed or changed client never reaches the next test, and one kept past its lease
    cannot reach the next test's routes."""
    async with pool_of(http_service("api", routes=_declare, base_url=BASE, max_size=1)) as pool:
        async with pool.acquire("api") as api:
            kept = api.client
            async with api.client:  # code under test that closes the client it was given
                kept.headers["authorization"] = "Bearer x"
                kept.cookies.set("session", "s1")
                assert (await kept.get("/users/1")).status_code == 200
            assert kept.is_closed
        async with pool.acquire("api") as api:
            assert api.client is not kept and not api.client.is_closed
            response = await api.get("/users/1")
            assert (
                "authorization" not in response.request.headers and "cookie" not in response.request.headers
            )
            with pytest.raises(
                MockPoolError, match=r"this client or transport belongs to a lease that has ended"
            ):
                await httpx.AsyncClient(transport=kept._transport).get(f"{BASE}/users/1")
            assert api.calls.call_count == 1


def _set_status(response: httpx.Response) -> None:
    response.status_code = 500


def _replace_stream(response: httpx.Response) -> None:
    response.stream = httpx.ByteStream(b"evil")  # what respx serves, where .content is not


def _set_extension(response: httpx.Response) -> None:
    response.extensions["http_version"] = b"HTTP/9"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "change", [_set_status, _replace_stream, _set_extension], ids=["status", "stream", "extensions"]
)
async def test_a_response_changed_in_place_is_rebuilt_from_the_declaration(
    change: Callable[[httpx.Response], None],
) -> None:
    async with pool_of(http_service("api", routes=_declare, base_url=BASE, max_size=1)) as pool:
        async with pool.acquire("api") as api:
            first_router = api.router
            response = api.router["user"].return_value
            assert response is not None
            change(response)  # respx's rollback restores the reference, not the object
        async with pool.acquire("api") as api:
            assert api.router is not first_router
            response = await api.get("/users/1")
            assert response.status_code == 200 and response.json() == {"id": 1, "name": "Ada"}
            assert "http_version" not in response.extensions
        assert sum(pool.stats("api").recoveries.values()) == 0  # the reset rebuilt it


@pytest.mark.asyncio
async def test_a_shorthand_answer_changed_in_place_is_rebuilt_from_the_declaration() -> None:
    async with pool_of(http_service("api", routes=SHORTHAND, base_url=BASE, max_size=1)) as pool:
        async with pool.acquire("api") as api:
            answer = api.router["GET /videos/{id}"].side_effect
            assert isinstance(answer, Answer)
            answer.answer = lambda request: 503  # the route's answer, for every later lease
        async with pool.acquire("api") as api:
            assert (await api.get("/videos/abc")).json() == {"id": "abc"}
        assert sum(pool.stats("api").recoveries.values()) == 0


def test_the_double_works_from_successive_event_loops() -> None:
    pool = MockPool(supervise=False)
    pool.register(http_service(routes={"GET /x": {"ok": True}}, max_size=1))
    seen = []

    async def one_test() -> None:
        async with pool.acquire("http") as api:
            seen.append(api)
            assert (await api.get("/x")).json() == {"ok": True}
            assert api.calls.call_count == 1

    asyncio.run(one_test())
    asyncio.run(one_test())
    assert seen[0] is seen[1]
    pool.close()
    with pytest.raises(MockPoolError, match="ended"):
        seen[0].client  # noqa: B018 - the property raises: the double was destroyed


# == deprecated names ==========================================================================


@pytest.mark.asyncio
async def test_the_01_route_table_and_handler_still_work_with_a_deprecation_warning() -> None:
    async with pool_of(http_service(routes={"GET /a": {"from": "service"}}, max_size=1)) as pool:
        async with pool.acquire("http") as api:
            with pytest.warns(DeprecationWarning, match=r"double.routes is deprecated.*use double.router"):
                routes = api.routes
            routes.add("GET", "/a", {"from": "lease"})  # same key: replaces the route for this lease
            routes.add("GET", "/b", 500)
            assert len(routes) == 2
            with pytest.warns(DeprecationWarning, match=r"double.handler is deprecated"):
                api.handler = lambda request: 503 if request.url.path == "/down" else None
            assert (await api.get("/a")).json() == {"from": "lease"}
            assert (await api.get("/down")).status_code == 503
            assert (await api.get("/b")).status_code == 500  # the handler fell through
        async with pool.acquire("http") as api:
            assert api.handler is None
            assert (await api.get("/a")).json() == {"from": "service"}
            with pytest.raises(UnmatchedRequestError):
                await api.get("/b")


def test_route_and_route_table_name_respx_classes_with_a_warning() -> None:
    from mockpool import services

    with pytest.warns(DeprecationWarning, match=r"mockpool.services.Route is deprecated.*respx.Route"):
        assert services.Route is respx.Route
    with pytest.warns(DeprecationWarning, match=r"RouteTable is deprecated.*respx.models.RouteList"):
        assert services.RouteTable is respx.models.RouteList
    with pytest.raises(AttributeError):
        services.Nothing  # noqa: B018


# == transports ================================================================================


@pytest.mark.asyncio
async def test_the_lease_transport_serves_clients_the_code_builds() -> None:
    spec = http_service(routes={"GET /a": {"a": 1}}, max_size=1, intercept=False)
    async with pool_of(spec) as pool, pool.acquire("http") as api:
        assert isinstance(api.transport, httpx.MockTransport)
        async with httpx.AsyncClient(transport=api.transport, base_url="http://other") as own:
            assert (await own.get("/a")).json() == {"a": 1}
        assert [str(r.url) for r in api.calls_to("GET", "/a")] == ["http://other/a"]


class _CountingTransport(httpx.AsyncBaseTransport):
    """What code that wraps transports does (retries, auth, metrics)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.seen = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen += 1
        return await self.inner.handle_async_request(request)


@pytest.mark.asyncio
async def test_the_transport_service_serves_wrapped_transports_and_each_lease_sets_its_own() -> None:
    spec = http_transport_service(routes={"GET /a": {"a": 1}}, max_size=1)
    assert spec.name == "http_transport"
    async with pool_of(spec) as pool:
        async with pool.acquire("http_transport") as fake:
            assert isinstance(fake, TransportDouble) and not isinstance(fake, HttpDouble)
            wrapped = _CountingTransport(fake.transport)
            fake.router.get("/lease").respond(201)
            async with httpx.AsyncClient(transport=wrapped, base_url="http://svc") as client:
                assert (await client.get("/a")).json() == {"a": 1}
                assert (await client.get("/lease")).status_code == 201
            assert wrapped.seen == 2
            assert fake.router["GET /a"].call_count == 1
        async with pool.acquire("http_transport") as fake:
            assert fake.calls.call_count == 0
            async with httpx.AsyncClient(transport=fake.transport) as client:
                with pytest.raises(UnmatchedRequestError):
                    await client.get("http://svc/lease")


def test_a_sync_client_works_over_sync_routes() -> None:
    spec = http_transport_service(
        routes={"GET /a": {"a": 1}, "GET /fn": lambda request: "hi"}, intercept=False
    )
    fake = spec.factory()
    with httpx.Client(transport=fake.transport, base_url="http://svc") as client:
        assert client.get("/a").json() == {"a": 1}
        assert client.get("/fn").text == "hi"
    assert fake.calls.call_count == 2


@pytest.mark.asyncio
async def test_a_pass_through_route_explains_why_the_lease_client_cannot_pass_through() -> None:
    async with (
        pool_of(http_service("api", routes=_declare, base_url=BASE)) as pool,
        pool.acquire("api") as api,
    ):
        api.router["user"].pass_through()
        with pytest.raises(MockPoolError, match=r"pass-through route.*has no network behind it"):
            await api.get("/users/1")


# == interception ==============================================================================


async def fetch_user(user_id: int) -> Any:
    """Code under test that builds its own client (no SSL verification: a context with the
    system's CA bundle costs 20-90 ms, the same for every variant here)."""
    async with httpx.AsyncClient(verify=False) as client:
        response = await client.get(f"{BASE}/users/{user_id}")
        response.raise_for_status()
        return response.json()


@pytest.mark.asyncio
async def test_clients_the_code_builds_reach_the_router_of_the_lease_the_task_holds() -> None:
    async with pool_of(http_service("api", routes=_declare, base_url=BASE)) as pool:
        async with pool.acquire("api") as api:
            assert await fetch_user(1) == {"id": 1, "name": "Ada"}
            api.router.get("/users/2").respond(json={"id": 2})
            assert await asyncio.create_task(fetch_user(2)) == {"id": 2}  # a task started here too
            assert api.calls.call_count == 2
        with pytest.raises(
            UnmatchedRequestError, match=r"holds no lease of an intercepting http service \(services: 'api'\)"
        ):
            await fetch_user(1)


@pytest.mark.asyncio
async def test_a_sync_client_in_a_worker_thread_is_intercepted_too() -> None:
    def fetch() -> Any:
        with httpx.Client(verify=False) as client:
            return client.get(f"{BASE}/users/1").json()

    async with pool_of(http_service("api", routes=_declare, base_url=BASE)) as pool, pool.acquire("api"):
        assert await asyncio.to_thread(fetch) == {"id": 1, "name": "Ada"}  # to_thread copies the context


@pytest.mark.asyncio
async def test_two_services_held_at_once_answer_each_for_its_own_host() -> None:
    plex = http_service("plex", routes={"GET /identity": {"who": "plex"}}, base_url="http://plex.test:32400")
    youtube = http_service(
        "youtube", routes={"GET /identity": {"who": "youtube"}}, base_url="https://youtube.test"
    )
    async with pool_of(plex, youtube) as pool, pool.acquire("plex") as p, pool.acquire("youtube") as y:
        async with httpx.AsyncClient(verify=False) as client:
            assert (await client.get("http://plex.test:32400/identity")).json() == {"who": "plex"}
            assert (await client.get("https://youtube.test/identity")).json() == {"who": "youtube"}
            with pytest.raises(
                UnmatchedRequestError, match=r"no route of the services this task holds matches"
            ):
                await client.get("https://elsewhere.test/identity")
        assert (p.calls.call_count, y.calls.call_count) == (1, 1)


@pytest.mark.asyncio
async def test_a_group_lease_intercepts_for_its_http_member() -> None:
    """A group over an intercepting service runs the member's on_acquire and on_release: code
    that builds its own client reaches the member's routes while the group lease is held, as
    under a lease of the member itself, and nothing after."""
    async with pool_of(
        http_service("api", routes=_declare, base_url=BASE),
        ServiceSpec(name="users", factory=lambda api: [api], depends_on=("api",)),
    ) as pool:
        lease = pool.acquire("users")
        async with lease:
            assert await fetch_user(1) == {"id": 1, "name": "Ada"}
            assert lease.members["api"].calls.call_count == 1
        with pytest.raises(
            UnmatchedRequestError, match=r"holds no lease of an intercepting http service \(services: 'api'\)"
        ):
            await fetch_user(1)


@pytest.mark.asyncio
async def test_a_task_whose_lease_ended_gets_an_error_not_the_next_lease() -> None:
    async with pool_of(http_service("api", routes=_declare, base_url=BASE, max_size=1)) as pool:
        leaked: list[asyncio.Task[Any]] = []
        go = asyncio.Event()

        async def later() -> Any:
            await go.wait()
            return await fetch_user(1)

        async with pool.acquire("api"):
            leaked.append(asyncio.create_task(later()))  # outlives the lease, with its context
        async with pool.acquire("api") as api:
            go.set()
            with pytest.raises(UnmatchedRequestError, match=r"whose lease of 'api' has ended"):
                await leaked[0]
            assert api.calls.call_count == 0


@pytest.mark.asyncio
async def test_many_concurrent_tests_each_see_only_their_own_routes_and_calls() -> None:
    """Tests run concurrently over few instances, each adds its own route and sends through a
    client it did not get from the lease; none sees another's routes or calls."""
    tests, instances = 40, 4
    all_held = asyncio.Barrier(instances)  # the first wave holds every instance at once
    shared = httpx.AsyncClient(verify=False)  # one client for all: routing follows the task
    problems: list[str] = []

    async def one_test(n: int) -> None:
        async with pool.acquire("api") as api:
            if n < instances:
                await all_held.wait()
            if api.calls.call_count or len(api.router.routes) != 3:
                problems.append(
                    f"test {n} sees {api.calls.call_count} calls, {len(api.router.routes)} routes"
                )
            route = api.router.get(f"/mine/{n}").respond(json={"owner": n})
            for _ in range(3):
                await asyncio.sleep(0)  # interleave with the other tests
                assert (await shared.get(f"{BASE}/mine/{n}")).json() == {"owner": n}
            others = [m for m in range(tests) if m != n][:3]
            for m in others:
                with pytest.raises(UnmatchedRequestError):
                    await shared.get(f"{BASE}/mine/{m}")
            if route.call_count != 3 or api.calls.call_count != 3:
                problems.append(
                    f"test {n}: {route.call_count} calls on its route, {api.calls.call_count} in all"
                )

    pool = MockPool(supervise=False)
    pool.register(http_service("api", routes=_declare, base_url=BASE, max_size=instances))
    async with pool:
        await asyncio.gather(*(one_test(n) for n in range(tests)))
        pool.check_invariants()
        assert pool.stats("api").created == instances
    await shared.aclose()
    assert problems == []


@pytest.mark.asyncio
async def test_a_tests_own_respx_mock_still_answers_what_the_leases_do_not() -> None:
    async with pool_of(http_service("api", routes=_declare, base_url=BASE)) as pool, pool.acquire("api"):
        with respx.mock(base_url="https://legacy.test", assert_all_called=False) as legacy:
            legacy.get("/ping").respond(text="pong")
            async with httpx.AsyncClient(verify=False) as client:
                assert (await client.get("https://legacy.test/ping")).text == "pong"
                assert (await client.get(f"{BASE}/users/1")).json()["name"] == "Ada"


@pytest.mark.asyncio
async def test_a_tests_own_respx_mock_using_httpx_passes_the_pools_host_through() -> None:
    """``respx.mock(using="httpx")`` patches httpx's transports, above httpcore where the pool
    intercepts: it sees every request first, and calls one it has no route for "not mocked".
    A ``pass_through()`` route for the service's host hands those on to the pool (services.md)."""
    async with (
        pool_of(http_service("api", routes=_declare, base_url=BASE)) as pool,
        pool.acquire("api"),
        httpx.AsyncClient(verify=False) as client,
    ):
        with respx.mock(using="httpx", assert_all_called=False) as own:
            own.get("https://legacy.test/ping").respond(text="pong")
            with pytest.raises(respx.models.AllMockedAssertionError):
                await client.get(f"{BASE}/users/1")
            own.route(host=httpx.URL(BASE).host).pass_through()
            assert (await client.get("https://legacy.test/ping")).text == "pong"
            assert (await client.get(f"{BASE}/users/1")).json()["name"] == "Ada"


@pytest.mark.asyncio
async def test_httpx_is_patched_while_the_pool_holds_instances_and_unpatched_after() -> None:
    assert INTERCEPTOR not in HTTPCoreMocker.routers
    pool = MockPool(supervise=False)
    pool.register(http_service("api", routes=_declare, base_url=BASE, min_size=2, max_size=2))
    pool.register(http_service("quiet", intercept=False))
    async with pool:
        await pool.warm({"api": 2})
        assert HTTPCoreMocker.routers.count(INTERCEPTOR) == 1  # once, however many instances
        assert INTERCEPTOR.services() == ["api"]
        assert pool.service_pools["quiet"].spec.on_acquire is None  # no hook without interception
    assert INTERCEPTOR not in HTTPCoreMocker.routers
    assert not HTTPCoreMocker._patches


# == under pytest-asyncio: a fixture holds the lease, the test sends ===========================


@pytest_asyncio.fixture
async def respx_mock() -> AsyncIterator[respx.Router]:
    """What a respx suite's ``respx_mock`` fixture becomes (docs/recipes.md)."""
    pool = MockPool(supervise=False)
    pool.register(http_service("api", routes=_declare, base_url=BASE))
    async with pool, pool.acquire("api") as api:
        yield api.router


@pytest.mark.asyncio
async def test_a_lease_held_by_a_fixture_intercepts_the_tests_requests(respx_mock: respx.Router) -> None:
    respx_mock.get("/users/3").respond(json={"id": 3})
    assert await fetch_user(3) == {"id": 3}
    assert respx_mock.calls.call_count == 1


# == the respx migration recipe (docs/recipes.md (d)) runs as written =========================


def _recipe_blocks() -> dict[str, str]:
    """The recipe's code blocks, by the file name on their first line."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "recipes.md").read_text()
    recipe = text[text.index("## (d) Move a respx suite") :]
    recipe = recipe[: recipe.index("\n## ", 1)]  # up to the next recipe
    blocks = re.findall(r"```python\n# (.+?)\n(.*?)```", recipe, re.DOTALL)
    return {title.split(":")[0].strip(): body for title, body in blocks}


@pytest.mark.parametrize("side", ["before", "after"])
def test_the_respx_recipe_passes_before_and_after_with_the_same_tests(
    pytester: pytest.Pytester, side: str
) -> None:
    blocks = _recipe_blocks()
    assert set(blocks) == {"test_users.py", "conftest.py, before", "conftest.py, after"}
    pytester.makepyfile(test_users=blocks["test_users.py"], conftest=blocks[f"conftest.py, {side}"])
    pytester.makefile(
        ".toml",
        pyproject=(
            "[tool.pytest.ini_options]\n"
            'filterwarnings = ["error"]\n'
            'asyncio_mode = "strict"\n'
            'asyncio_default_fixture_loop_scope = "function"\n'
        ),
    )
    flags = (
        "-p",
        "no:looptime_plugin",
        "-p",
        "no:randomly",
        "-p",
        "no:anyio",
        "-p",
        "no:asyncio-cooperative",
    )
    result = pytester.runpytest(*flags)
    result.assert_outcomes(passed=3)
