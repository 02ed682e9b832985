"""Dirtying battery of the http doubles (issue 12): each way a test can change a lease, and the
next lease on the same instance is as new; isolation-verify sees every visible dirtier."""

from __future__ import annotations

import asyncio
import dataclasses
import warnings
from collections.abc import Callable, Iterator

import httpx
import pytest
import respx

from mockpool import MockPoolError, ServiceSpec
from mockpool.services import (
    HttpDouble,
    TransportDouble,
    UnmatchedRequestError,
    http_service,
    http_transport_service,
)
from mockpool.services._http_lease import Answer
from mockpool.testing import Dirtier, check_isolation

BASE = "https://api.test"


def _declare(router: respx.Router) -> None:
    router.get("/a", name="a").respond(json={"a": 1})
    router.get("/seq", name="seq").mock(
        side_effect=[httpx.Response(200, text="first"), httpx.Response(200, text="second")]
    )
    router.post("/items", name="create").respond(201)


def _first(request: httpx.Request) -> str:
    del request
    return "first"


def _busy(request: httpx.Request) -> int:
    del request
    return 503


# "GET /seq" answers through a callable: the route's side effect is the shorthand's Answer.
SHORTHAND = {"GET /a": {"a": 1}, "GET /seq": _first, "POST /items": 201}


async def _send(h: TransportDouble, method: str, path: str) -> httpx.Response:
    """Through the lease's transport, as code that builds its own client over it would."""
    async with httpx.AsyncClient(transport=h.transport, base_url=BASE) as client:
        return await client.request(method, path)


async def _answers(h: TransportDouble) -> bool:
    return bool((await _send(h, "GET", "/a")).json() == {"a": 1})


async def _unmatched_raises(h: TransportDouble) -> bool:
    with pytest.raises(UnmatchedRequestError):
        await _send(h, "GET", "/nowhere")
    return True


def _new_client(client: httpx.AsyncClient) -> bool:
    fresh = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(204)))
    return (
        not client.is_closed
        and client.auth is None
        and str(client.params) == ""
        and client.timeout == httpx.Timeout(5.0)
        and not client.follow_redirects
        and client.max_redirects == 20
        and client.event_hooks == {"request": [], "response": []}
        and client.headers == fresh.headers
        and not client.cookies.jar
        and str(client.base_url) == BASE
    )


def _pristine(h: TransportDouble) -> bool:
    """As new, without sending anything (that would record a call)."""
    router = h.router
    return (
        len(router.routes) == 3
        and router.calls.call_count == 0
        and not any(route.called or route.is_pass_through for route in router.routes)
        and h.on_unmatched == "raise"
        and h.handler is None
        and (not isinstance(h, HttpDouble) or _new_client(h.client))
    )


async def _dirty_calls(h: TransportDouble) -> None:
    await _send(h, "GET", "/a")
    await _send(h, "GET", "/a")


async def _consume_sequence(h: TransportDouble) -> None:
    await _send(h, "GET", "/seq")


async def _sequence_restarts(h: TransportDouble) -> bool:
    response = await _send(h, "GET", "/seq")
    return response.status_code == 200 and response.text == "first"


def _change_sequence_response_in_place(h: TransportDouble) -> None:
    # Reading the route's side effect (an iterator over the declared responses) hands out the
    # declared objects themselves, not the copies respx serves.
    route = h.router.routes["seq"]
    effect = route.side_effect
    assert isinstance(effect, Iterator), "a declared sequence is an iterator"
    declared = list(effect)
    route.side_effect = declared  # what was read, put back
    first = declared[0]
    assert isinstance(first, httpx.Response)
    first.status_code = 500


async def _extra_gone(h: TransportDouble) -> bool:
    with pytest.raises(UnmatchedRequestError):
        await _send(h, "GET", "/extra")
    return len(h.router.routes) == 3


def _set_handler(h: TransportDouble) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        h.handler = lambda request: httpx.Response(503)


def _declared_response(h: TransportDouble) -> httpx.Response:
    response = h.router.routes[0].return_value
    assert response is not None, "the first route answers a declared response"
    return response


def _change_response_in_place(h: TransportDouble) -> None:
    _declared_response(h).status_code = 500


def _replace_stream(h: TransportDouble) -> None:
    # respx's clone_response serves the declared response's stream, not its .content.
    _declared_response(h).stream = httpx.ByteStream(b"evil")


def _change_extensions(h: TransportDouble) -> None:
    _declared_response(h).extensions["http_version"] = b"HTTP/9"


async def _declared_extensions(h: TransportDouble) -> bool:
    return "http_version" not in (await _send(h, "GET", "/a")).extensions


def _change_answer_in_place(h: TransportDouble) -> None:
    answer = h.router["GET /seq"].side_effect
    assert isinstance(answer, Answer), "a shorthand callable answers through an Answer"
    answer.answer = _busy


async def _answers_first(h: TransportDouble) -> bool:
    response = await _send(h, "GET", "/seq")
    return response.status_code == 200 and response.text == "first"


#: The previous lease's client of each instance, to check it cannot reach the next lease.
_KEPT: dict[int, httpx.AsyncClient] = {}


def _keep_client(h: HttpDouble) -> None:
    _KEPT[id(h)] = h.client


async def _kept_client_is_ended(h: HttpDouble) -> bool:
    kept = _KEPT.pop(id(h), None)
    calls = h.calls.call_count
    if kept is not None:
        with pytest.raises(MockPoolError, match="belongs to a lease that has ended"):
            await kept.get("/a")
    return h.calls.call_count == calls  # nothing reached this lease's router


def _extra(h: TransportDouble) -> None:
    h.router.get("/extra").respond(201)


def _snapshot_then_extra(h: TransportDouble) -> None:
    h.router.snapshot()  # one more snapshot on respx's stack: a plain rollback would stop there
    _extra(h)


def _rollback_then_extra(h: TransportDouble) -> None:
    h.router.rollback()  # pops the declared state off respx's stack
    _extra(h)


def _mute_unmatched(h: TransportDouble) -> None:
    h.router._assert_all_mocked = False  # what respx.mock(assert_all_mocked=False) sets


def _demand_all_called(h: TransportDouble) -> None:
    h.router._assert_all_called = True  # what respx.mock(assert_all_called=True) sets


def _async_hook(request: httpx.Request) -> None:
    del request


ROUTER_DIRTIERS = [
    # First: the concurrent run checks each dirtier's `gone` in order, and later ones send requests.
    Dirtier(
        "call records",
        _dirty_calls,
        gone=lambda h: h.calls.call_count == 0 and h.router.routes[0].call_count == 0,
    ),
    Dirtier("route added", _extra, gone=_extra_gone),
    Dirtier("return value changed", lambda h: h.router.routes[0].respond(500), gone=_answers),
    Dirtier(
        "side effect set",
        lambda h: setattr(h.router.routes[0], "side_effect", httpx.ConnectError),
        gone=_answers,
    ),
    Dirtier("route removed", lambda h: h.router.routes.pop(h.router.routes[0].name), gone=_answers),
    Dirtier("routes cleared", lambda h: h.router.clear(), gone=_answers),
    Dirtier(
        "pass-through",
        lambda h: h.router.routes[0].pass_through(),
        gone=lambda h: not h.router.routes[0].is_pass_through,
    ),
    Dirtier("snapshot pushed by the test", _snapshot_then_extra, gone=_extra_gone),
    Dirtier("snapshot popped by the test", _rollback_then_extra, gone=_extra_gone),
    Dirtier("assert_all_mocked off", _mute_unmatched, gone=_unmatched_raises),
    Dirtier("assert_all_called on", _demand_all_called, gone=lambda h: h.router._assert_all_called is False),
    Dirtier("on_unmatched", lambda h: setattr(h, "on_unmatched", "404"), gone=_unmatched_raises),
    Dirtier(
        "on_unmatched, the instance's private slot",
        lambda h: setattr(h, "_on_unmatched", "404"),
        gone=_unmatched_raises,
    ),
    Dirtier("handler (deprecated)", _set_handler, gone=_answers),
]
SEQUENCE_DIRTIERS = [Dirtier("side effect sequence consumed", _consume_sequence, gone=_sequence_restarts)]
# respx's rollback restores the reference to a declared response, not its content.
RESPONSE_DIRTIERS = [
    Dirtier("declared response changed in place", _change_response_in_place, gone=_answers),
    Dirtier("declared response's stream replaced", _replace_stream, gone=_answers),
    Dirtier("declared response's extensions changed", _change_extensions, gone=_declared_extensions),
]
ANSWER_DIRTIERS = [Dirtier("shorthand answer changed in place", _change_answer_in_place, gone=_answers_first)]


async def _closed_by_the_code(h: HttpDouble) -> None:
    # What `async with h.client:` in the code under test ends with; aclose() also works on a
    # client this lease already used, which httpx refuses to enter.
    await h.client.get("/a")
    await h.client.aclose()


async def _request_headers(h: HttpDouble) -> httpx.Headers:
    return (await h.get("/a")).request.headers


async def _no_auth(h: HttpDouble) -> bool:
    return "authorization" not in await _request_headers(h)


async def _no_params(h: HttpDouble) -> bool:
    return (await h.get("/a")).request.url.query == b""


async def _no_cookie(h: HttpDouble) -> bool:
    return "cookie" not in await _request_headers(h)


CLIENT_DIRTIERS = [
    Dirtier("client closed", _closed_by_the_code, gone=_answers),
    Dirtier("auth", lambda h: setattr(h.client, "auth", ("user", "pw")), gone=_no_auth),
    Dirtier("params", lambda h: setattr(h.client, "params", {"debug": "1"}), gone=_no_params),
    Dirtier(
        "timeout",
        lambda h: setattr(h.client, "timeout", 0.001),
        gone=lambda h: h.client.timeout == httpx.Timeout(5.0),
    ),
    Dirtier(
        "event hooks",
        lambda h: h.client.event_hooks["request"].append(_async_hook),
        gone=lambda h: h.client.event_hooks == {"request": [], "response": []},
    ),
    Dirtier(
        "follow_redirects",
        lambda h: setattr(h.client, "follow_redirects", True),
        gone=lambda h: not h.client.follow_redirects,
    ),
    Dirtier(
        "max_redirects",
        lambda h: setattr(h.client, "max_redirects", 1),
        gone=lambda h: h.client.max_redirects == 20,
    ),
    Dirtier("headers", lambda h: h.client.headers.update({"authorization": "Bearer t"}), gone=_no_auth),
    Dirtier("cookies", lambda h: h.client.cookies.set("session", "s1"), gone=_no_cookie),
    Dirtier(
        "base_url",
        lambda h: setattr(h.client, "base_url", "https://elsewhere.test"),
        gone=lambda h: str(h.client.base_url) == BASE,
    ),
    # A reference held outside the double: nothing on the instance changes, so no fingerprint
    # can see it; the client is ended with its lease instead.
    Dirtier("client kept past its lease", _keep_client, gone=_kept_client_is_ended, visible=False),
]

SPECS = {
    "http, respx routes": (
        http_service("api", routes=_declare, base_url=BASE),
        [*ROUTER_DIRTIERS, *SEQUENCE_DIRTIERS, *RESPONSE_DIRTIERS, *CLIENT_DIRTIERS],
    ),
    "http, shorthand routes": (
        http_service("api", routes=SHORTHAND, base_url=BASE),
        [*ROUTER_DIRTIERS, *RESPONSE_DIRTIERS, *ANSWER_DIRTIERS, *CLIENT_DIRTIERS],
    ),
    "transport, respx routes": (
        http_transport_service("api", routes=_declare, base_url=BASE),
        [*ROUTER_DIRTIERS, *SEQUENCE_DIRTIERS, *RESPONSE_DIRTIERS],
    ),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("verify", [False, True], ids=["verify-off", "verify-on"])
@pytest.mark.parametrize("case", SPECS.values(), ids=SPECS.keys())
async def test_every_dirtier_is_gone_by_the_next_lease(
    case: tuple[ServiceSpec, list[Dirtier]], verify: bool
) -> None:
    spec, dirtiers = case
    report = await check_isolation(spec, dirtiers, pristine=_pristine, isolation_verify=verify, strict=True)
    assert {c.outcome for c in report.cases} == {"reset"}


@pytest.mark.asyncio
@pytest.mark.parametrize("case", SPECS.values(), ids=SPECS.keys())
async def test_concurrent_leases_over_few_instances_stay_isolated(
    case: tuple[ServiceSpec, list[Dirtier]],
) -> None:
    spec, dirtiers = case
    report = await check_isolation(
        spec, dirtiers, pristine=_pristine, strict=True, tasks=3 * len(dirtiers), instances=3
    )
    assert report.cases[-1].outcome == "reset"


@pytest.mark.asyncio
@pytest.mark.parametrize("case", SPECS.values(), ids=SPECS.keys())
async def test_without_a_reset_isolation_verify_catches_every_visible_dirtier(
    case: tuple[ServiceSpec, list[Dirtier]],
) -> None:
    """The fingerprint sees each of them: with the reset gone, verify finds the dirt and
    recovery cleans the instance before the next lease."""
    spec, dirtiers = case
    visible = [d for d in dirtiers if d.visible]
    report = await check_isolation(
        dataclasses.replace(spec, reset=None), visible, pristine=_pristine, isolation_verify=True
    )
    assert {c.name: c.outcome for c in report.cases} == {d.name: "caught" for d in visible}


def test_the_dirtier_names_are_unique() -> None:
    for _, dirtiers in SPECS.values():
        names = [d.name for d in dirtiers]
        assert len(names) == len(set(names))


def test_a_dirtier_case_reads_as_its_spec() -> None:
    spec, _ = SPECS["http, respx routes"]
    assert spec.fingerprint is not None and spec.on_acquire is not None
    assert isinstance(spec.factory(), HttpDouble)


@pytest.mark.asyncio
@pytest.mark.parametrize("intercepted", [False, True], ids=["lease client", "client the code built"])
async def test_a_request_still_answered_when_its_lease_ends_is_not_recorded_in_the_next(
    intercepted: bool,
) -> None:
    """A task the test left running (a fire-and-forget request to a route with a slow side
    effect) is answered after the lease ended: respx records the call then, and it must not
    show in the next lease's call counts."""
    from mockpool import MockPool

    reached, answer = asyncio.Event(), asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        reached.set()
        await answer.wait()
        return httpx.Response(200, text="late")

    def declare(router: respx.Router) -> None:
        router.get("/slow", name="slow").mock(side_effect=slow)

    pool = MockPool(supervise=False)
    pool.register(http_service("api", routes=declare, base_url=BASE, max_size=1))
    async with pool, httpx.AsyncClient(base_url=BASE) as own:
        async with pool.acquire("api") as h:
            left = asyncio.create_task((own if intercepted else h.client).get("/slow"))
            await reached.wait()
        async with pool.acquire("api") as h:
            answer.set()
            assert (await left).text == "late"  # the task that sent it gets its answer
            assert h.calls.call_count == 0
            assert h.router.routes["slow"].call_count == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("service", [http_service, http_transport_service], ids=["http", "transport"])
async def test_a_declared_response_of_a_sequence_changed_in_place_is_declared_again(
    service: Callable[..., ServiceSpec],
) -> None:
    """As for a declared ``return_value``: the reset sees what the declared responses of a side
    effect sequence hold, not only which they are. Apart from the battery: every concurrent
    lease would check it by consuming the route's two answers."""
    dirtier = Dirtier(
        "declared sequence response changed in place",
        _change_sequence_response_in_place,
        gone=_sequence_restarts,
    )
    for verify in (False, True):
        report = await check_isolation(
            service("api", routes=_declare, base_url=BASE),
            [dirtier],
            pristine=_pristine,
            isolation_verify=verify,
            strict=True,
        )
        assert [case.outcome for case in report.cases] == ["reset"]
    weakened = dataclasses.replace(service("api", routes=_declare, base_url=BASE), reset=None)
    report = await check_isolation(weakened, [dirtier], pristine=_pristine, isolation_verify=True)
    assert [case.outcome for case in report.cases] == ["caught"]
