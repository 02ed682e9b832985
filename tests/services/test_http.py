from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpx
import pytest

from mockpool import MockPool
from mockpool.services import (
    HttpDouble,
    MissingExtraError,
    TransportDouble,
    UnmatchedRequestError,
    http_service,
    http_transport_service,
)

from ._helpers import pool_of


async def _video(request: httpx.Request) -> dict[str, str]:
    return {"id": request.extensions["path_params"]["id"]}


ROUTES: dict[Any, Any] = {
    ("GET", "/items"): [{"id": 1}],
    "GET /videos/{id}": _video,
    "POST /items": (201, {"created": True}, {"location": "/items/2"}),
    "DELETE /items/{id}": 204,
    "/health": "ok",
    "GET /raw": httpx.Response(418, content=b"teapot"),
    "GET /files/{rest:path}": lambda request: request.extensions["path_params"]["rest"],
}


@pytest.mark.asyncio
async def test_routes_answer_in_every_supported_form() -> None:
    async with pool_of(http_service(routes=ROUTES, max_size=1)) as pool, pool.acquire("http") as api:
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
        assert len(api.calls) == 8


@pytest.mark.asyncio
async def test_unmatched_request_gets_a_404_listing_the_routes() -> None:
    async with pool_of(http_service("plex", routes={"GET /a": {}})) as pool, pool.acquire("plex") as plex:
        response = await plex.get("/b")
        assert response.status_code == 404
        body = response.json()
        assert body["routes"] == ["GET /a"]
        assert "service 'plex': no route matches GET /b" in body["error"]


@pytest.mark.asyncio
async def test_unmatched_request_can_raise() -> None:
    async with pool_of(http_service(on_unmatched="raise")) as pool, pool.acquire("http") as api:
        with pytest.raises(UnmatchedRequestError, match="no route matches GET /nowhere; routes: none"):
            await api.get("/nowhere")


@pytest.mark.asyncio
async def test_a_lease_sets_its_own_routes_and_handler_and_the_next_lease_does_not_see_them() -> None:
    async with pool_of(http_service(routes={"GET /a": {"from": "service"}}, max_size=1)) as pool:
        async with pool.acquire("http") as api:
            api.routes.add("GET", "/a", {"from": "lease"})
            api.routes.add("GET", "/b", 500)
            assert (await api.get("/a")).json() == {"from": "lease"}
            api.handler = lambda request: 503 if request.url.path == "/down" else None
            assert (await api.get("/down")).status_code == 503
            assert (await api.get("/b")).status_code == 500  # the handler fell through
            api.client.headers["authorization"] = "Bearer x"
            api.client.cookies.set("session", "s1")
            assert isinstance(api.transport, httpx.MockTransport)
        async with pool.acquire("http") as api:
            assert api.calls == []
            assert api.handler is None
            assert (await api.get("/a")).json() == {"from": "service"}
            assert (await api.get("/b")).status_code == 404
            assert "authorization" not in api.calls[0].headers
            assert "cookie" not in api.calls[0].headers


@pytest.mark.asyncio
async def test_bad_answers_say_what_a_route_may_answer() -> None:
    async with pool_of(http_service(routes={"GET /x": 3.5})) as pool, pool.acquire("http") as api:
        with pytest.raises(TypeError, match=r"answered a float; answer an httpx.Response"):
            await api.get("/x")


def test_the_client_works_from_successive_event_loops() -> None:
    pool = MockPool(supervise=False)
    pool.register(http_service(routes={"GET /x": {"ok": True}}, max_size=1))
    seen = []

    async def one_test() -> None:
        async with pool.acquire("http") as api:
            seen.append(api)
            assert (await api.get("/x")).json() == {"ok": True}
            assert len(api.calls) == 1

    asyncio.run(one_test())
    asyncio.run(one_test())
    assert seen[0] is seen[1]

    async def close() -> None:
        await pool.aclose()

    asyncio.run(close())
    assert seen[0].client.is_closed


def test_missing_httpx_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'mockpool\[http\]'"):
        http_service()


def test_bad_on_unmatched_is_refused() -> None:
    with pytest.raises(ValueError, match="on_unmatched='ignore' must be '404' or 'raise'"):
        http_service(on_unmatched="ignore")  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_the_lease_exposes_its_mock_transport_for_clients_the_code_builds() -> None:
    spec = http_service(routes={"GET /a": {"a": 1}}, max_size=1)
    async with pool_of(spec) as pool, pool.acquire("http") as api:
        assert isinstance(api.transport, httpx.MockTransport)
        async with httpx.AsyncClient(transport=api.transport, base_url="http://other") as own:
            assert (await own.get("/a")).json() == {"a": 1}
        assert [str(r.url) for r in api.calls] == ["http://other/a"]


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
            assert isinstance(fake, TransportDouble)
            assert not hasattr(fake, "client")
            wrapped = _CountingTransport(fake.transport)
            fake.routes.add("GET", "/lease", 201)

            async def handler(request: httpx.Request) -> Any:
                return {"handled": True} if request.url.path == "/h" else None

            fake.handler = handler
            async with httpx.AsyncClient(transport=wrapped, base_url="http://svc") as client:
                assert (await client.get("/a")).json() == {"a": 1}
                assert (await client.get("/lease")).status_code == 201
                assert (await client.get("/h")).json() == {"handled": True}
            assert wrapped.seen == 3
            assert len(fake.calls_to("GET", "/a")) == 1
        async with pool.acquire("http_transport") as fake:
            assert fake.calls == []
            assert fake.handler is None
            async with httpx.AsyncClient(transport=fake.transport) as client:
                assert (await client.get("http://svc/lease")).status_code == 404
                assert (await client.get("http://svc/h")).status_code == 404


def test_a_sync_client_works_over_sync_routes() -> None:
    spec = http_transport_service(routes={"GET /a": {"a": 1}, "GET /fn": lambda request: "hi"})
    fake = spec.factory()
    fake.handler = lambda request: 418 if request.url.path == "/tea" else None
    with httpx.Client(transport=fake.transport, base_url="http://svc") as client:
        assert client.get("/a").json() == {"a": 1}
        assert client.get("/fn").text == "hi"
        assert client.get("/tea").status_code == 418
    assert len(fake.calls) == 3
