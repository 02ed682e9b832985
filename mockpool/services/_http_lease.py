"""What one lease of an http double holds, and the interceptor that routes requests to it.

Imported when an http service is built (it needs httpx and respx), never with
:mod:`mockpool.services`. Two ways in:

- :class:`RouterTransport`: the lease's own ``httpx.MockTransport``, under ``double.client`` and
  for code that takes a transport. It answers from its lease's router only, and only while the
  lease lasts: a client kept past its lease raises instead of reaching the next test's routes.
- :data:`INTERCEPTOR`: one respx router registered with respx's ``HTTPCoreMocker`` while any
  intercepting instance exists. respx patches httpcore's connection pools once and asks its
  registered routers in turn; this one answers from the routers of the leases held by the task
  that sent the request (:data:`HELD`, a context variable the lease's ``on_acquire`` sets), so
  concurrent tests each see only their own routes.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar, Token
from typing import Any, Literal

import httpx
import respx
from respx.mocks import HTTPCoreMocker
from respx.models import AllMockedAssertionError, PassThrough
from respx.patterns import Method, Path

from ..errors import MockPoolError
from ._http_errors import UnmatchedRequestError

__all__ = (
    "HELD",
    "INTERCEPTOR",
    "Answer",
    "LeaseState",
    "RespxUnmatchedRequestError",
    "RouterTransport",
    "client_print",
    "enter",
    "leave",
    "roll_back",
    "router_print",
    "router_state",
    "to_response",
)

OnUnmatched = Literal["raise", "404"]

#: The leases of intercepting http services held by the running task (the latest first).
HELD: ContextVar[tuple[LeaseState, ...]] = ContextVar("mockpool_http_leases", default=())


class RespxUnmatchedRequestError(UnmatchedRequestError, AllMockedAssertionError):
    """The form :class:`UnmatchedRequestError` is raised in: also respx's
    ``AllMockedAssertionError``, so respx asks its other routers (a test's own ``respx.mock``)
    before the error reaches the code under test."""


# == the lease =================================================================================


class LeaseState:
    """One lease of a double: its transport, its client (made on first use), its settings.

    A new one per lease; the old one is ended (``live = False``), and whatever still holds it
    (a client, a transport, a task's context) gets an error instead of the router.
    """

    __slots__ = (
        "__weakref__",
        "_client",
        "base",
        "client_base_url",
        "handler",
        "in_flight",
        "live",
        "name",
        "on_unmatched",
        "router",
        "transport",
    )

    def __init__(
        self,
        name: str,
        router: respx.Router,
        *,
        base: httpx.URL | None,
        client_base_url: str,
        on_unmatched: OnUnmatched,
    ) -> None:
        self.name = name
        self.router = router
        #: The service's base URL: the requests it answers 404 to with ``on_unmatched="404"``.
        self.base = base
        self.client_base_url = client_base_url
        self.on_unmatched: OnUnmatched = on_unmatched
        #: Deprecated: a lease-wide ``(request) -> answer | None``, tried before the routes.
        self.handler: Callable[[httpx.Request], Any] | None = None
        self.live = True
        #: Requests the router is answering (an async side effect still running): the reset
        #: gives such a router up, so their late call records never reach the next lease.
        self.in_flight = 0
        self.transport = RouterTransport(self)
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        client = self._client
        if client is None:
            self.check_live()
            # Over a given transport httpx builds no SSL context: about 15 µs, not 20-90 ms.
            client = self._client = httpx.AsyncClient(transport=self.transport, base_url=self.client_base_url)
        return client

    @property
    def built_client(self) -> httpx.AsyncClient | None:
        return self._client

    def check_live(self, request: httpx.Request | None = None) -> None:
        if not self.live:
            what = f"{request.method} {request.url}: " if request is not None else ""
            raise MockPoolError(
                f"service {self.name!r}: {what}this client or transport belongs to a lease that has "
                "ended; use the client or transport of the lease you hold (each lease gets new ones, "
                "so no request reaches another test's routes)"
            )

    # -- answering: raises respx's AllMockedAssertionError when no route matches -------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        try:
            handler = self.handler
            if handler is not None:
                answer = handler(request)
                if answer is not None:
                    return self._record(request, to_response(answer, self.name, _sent(request)))
            return self.router.handler(request)
        finally:
            self.in_flight -= 1

    async def ahandle(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        try:
            handler = self.handler
            if handler is not None:
                answer = handler(request)
                if inspect.isawaitable(answer):
                    answer = await answer
                if answer is not None:
                    return self._record(request, to_response(answer, self.name, _sent(request)))
            return await self.router.async_handler(request)
        finally:
            self.in_flight -= 1

    def _record(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        self.router.record(request, response=response)
        return response

    def addressed(self, url: httpx.URL) -> bool:
        """Whether ``url`` is under the service's base URL (any URL without one)."""
        base = self.base
        if base is None:
            return True
        return (url.scheme, url.host, url.port) == (
            base.scheme,
            base.host,
            base.port,
        ) and url.path.startswith(base.path.rstrip("/"))

    def relative_path(self, url: httpx.URL) -> str:
        """``url``'s path as a route of this service would say it (relative to its base URL)."""
        base = self.base.path.rstrip("/") if self.base is not None else ""
        if not base or not url.path.startswith(base):
            return url.path
        return url.path[len(base) :] or "/"

    def not_found(self, request: httpx.Request) -> httpx.Response:
        routes = route_labels(self.router)
        response = httpx.Response(
            404,
            json={
                "error": f"service {self.name!r}: no route matches {request.method} {request.url}",
                "routes": routes,
            },
            request=request,
        )
        return self._record(request, response)

    def __repr__(self) -> str:
        return f"<lease of {self.name!r} {'live' if self.live else 'ended'}>"


class RouterTransport(httpx.MockTransport):
    """A lease's ``httpx.MockTransport``: its router answers, while the lease lasts.

    With sync side effects only, it also serves a sync ``httpx.Client``.
    """

    def __init__(self, lease: LeaseState) -> None:
        super().__init__(lease.handle)
        self._lease = lease

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        lease = self._lease
        lease.check_live(request)
        request.read()
        try:
            return lease.handle(request)
        except AllMockedAssertionError:
            return answer_unmatched((lease,), request)
        except PassThrough:
            raise _no_pass_through(lease, request) from None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        lease = self._lease
        lease.check_live(request)
        await request.aread()
        try:
            return await lease.ahandle(request)
        except AllMockedAssertionError:
            return answer_unmatched((lease,), request)
        except PassThrough:
            raise _no_pass_through(lease, request) from None


def _no_pass_through(lease: LeaseState, request: httpx.Request) -> MockPoolError:
    return MockPoolError(
        f"service {lease.name!r}: {request.method} {request.url} matched a pass-through route, but it "
        "came through the lease's own client or transport, which has no network behind it; "
        "pass-through works for requests from clients the code builds itself (intercepted)"
    )


def answer_unmatched(leases: Iterable[LeaseState], request: httpx.Request) -> httpx.Response:
    """No held router has a route: a 404 from a service that answers so (``on_unmatched="404"``)
    and is addressed, else :class:`RespxUnmatchedRequestError` naming what was tried."""
    leases = tuple(leases)
    live = [lease for lease in leases if lease.live]
    for lease in live:
        if lease.on_unmatched == "404" and lease.addressed(request.url):
            return lease.not_found(request)
    sent = f"{request.method} {request.url}"
    if live:
        first = live[0]
        fix = (
            f"add one for this lease with {first.name}.router.{request.method.lower()}"
            f"({first.relative_path(request.url)!r}).respond(...), declare it in "
            f"http_service({first.name!r}, routes=...), or pass on_unmatched='404'"
        )
        if len(live) == 1:
            routes = ", ".join(route_labels(first.router)) or "none"
            raise RespxUnmatchedRequestError(
                f"service {first.name!r}: no route matches {sent}; routes: {routes}; {fix}"
            )
        tried = "; ".join(
            f"{lease.name!r}: {', '.join(route_labels(lease.router)) or 'none'}" for lease in live
        )
        raise RespxUnmatchedRequestError(
            f"no route of the services this task holds matches {sent} ({tried}); {fix}"
        )
    held = sorted(INTERCEPTOR.services())
    if leases:
        ended = ", ".join(sorted({repr(lease.name) for lease in leases}))
        raise RespxUnmatchedRequestError(
            f"{sent} was sent from a task whose lease of {ended} has ended; requests are answered "
            "only while the lease is held (inside its 'async with')"
        )
    names = ", ".join(map(repr, held)) or "none"
    example = held[0] if held else "http"
    raise RespxUnmatchedRequestError(
        f"{sent} was sent from a task that holds no lease of an intercepting http service "
        f"(services: {names}); send it while the task holds one (async with pool.acquire({example!r}) "
        "as api: ...), from a task started there, or through the lease's own client (api.client)"
    )


def route_labels(router: respx.Router) -> list[str]:
    """``["GET /videos/{id}", ...]``: each route's name, else its method and path."""
    labels = []
    for route in router.routes:
        if route.name:
            labels.append(route.name)
            continue
        method = path = None
        for pattern in route.pattern:
            if isinstance(pattern, Method):
                method = pattern.value
            elif isinstance(pattern, Path):
                path = getattr(pattern.value, "pattern", pattern.value)
        labels.append(f"{method or '*'} {path or '*'}" if method or path else repr(route.pattern))
    return labels


# == interception ==============================================================================


class Interceptor(respx.Router):
    """Registered with respx's ``HTTPCoreMocker`` while intercepting instances exist.

    respx patches httpcore once and, per request, asks each registered router in turn, moving
    on when one raises ``AllMockedAssertionError``; this one answers from the task's leases.
    """

    def __init__(self) -> None:
        super().__init__(assert_all_called=False)
        self._users: dict[str, int] = {}

    def services(self) -> list[str]:
        """The services whose instances keep the interceptor in place."""
        return [name for name, count in self._users.items() if count]

    def hold(self, owner: object, service: str) -> Callable[[], None]:
        """Keep httpx intercepted while ``owner`` lives; the returned function (also run when
        ``owner`` is collected) lets go, once."""
        if not any(self._users.values()):
            HTTPCoreMocker.register(self)
            HTTPCoreMocker.start()  # respx patches only if no other router of its own did
        self._users[service] = self._users.get(service, 0) + 1
        return weakref.finalize(owner, self._let_go, service)

    def _let_go(self, service: str) -> None:
        self._users[service] -= 1
        if not any(self._users.values()):
            HTTPCoreMocker.unregister(self)
            HTTPCoreMocker.stop()  # respx unpatches only when no router of its own is left

    def handler(self, request: httpx.Request) -> httpx.Response:
        leases = HELD.get()
        for lease in leases:
            if lease.live:
                try:
                    return lease.handle(request)
                except AllMockedAssertionError:
                    continue
        return answer_unmatched(leases, request)

    async def async_handler(self, request: httpx.Request) -> httpx.Response:
        leases = HELD.get()
        for lease in leases:
            if lease.live:
                try:
                    return await lease.ahandle(request)
                except AllMockedAssertionError:
                    continue
        return answer_unmatched(leases, request)


INTERCEPTOR = Interceptor()


def enter(lease: LeaseState) -> Token[tuple[LeaseState, ...]]:
    """Put ``lease`` first in the running task's intercepted leases."""
    return HELD.set((lease, *HELD.get()))


def leave(lease: LeaseState, token: Token[tuple[LeaseState, ...]]) -> None:
    """Undo :func:`enter`. Released from another context (a fixture's teardown in another task),
    the token does not apply there; the lease ends at reset anyway, so nothing answers for it."""
    try:
        HELD.reset(token)
    except ValueError:
        current = HELD.get()
        if lease in current:
            HELD.set(tuple(held for held in current if held is not lease))


# == answers ===================================================================================


def to_response(answer: Any, service: str, route: str) -> httpx.Response:
    """A new ``httpx.Response`` from a shorthand answer (``mockpool.services.http.Responder``);
    ``route`` names where the answer comes from, for the error about a bad one."""
    if isinstance(answer, httpx.Response):
        # A copy: a Response is consumed by the request it answers, and a test may change it.
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)
    if isinstance(answer, tuple):
        status, body, *rest = answer
        response = to_response(body, service, route)
        return httpx.Response(
            status, headers={**response.headers, **(rest[0] if rest else {})}, content=response.content
        )
    if isinstance(answer, bool):
        raise TypeError(f"service {service!r}: {route} answers {answer!r}; answer a status or a body")
    if isinstance(answer, int):
        return httpx.Response(answer)
    if isinstance(answer, str):
        return httpx.Response(200, text=answer)
    if isinstance(answer, bytes):
        return httpx.Response(200, content=answer)
    if isinstance(answer, Mapping | list):
        return httpx.Response(200, json=answer)
    raise TypeError(
        f"service {service!r}: {route} answers a {type(answer).__name__}; answer an httpx.Response, "
        "a dict or list (JSON), an int (status), a str, bytes or a (status, body) tuple"
    )


def _sent(request: httpx.Request) -> str:
    return f"the answer to {request.method} {request.url.path}"


class Answer:
    """A shorthand route's callable answer as a respx side effect: it gets the request, with
    the path parameters in ``request.extensions["path_params"]``; None from it means 204."""

    __slots__ = ("answer", "service")

    def __init__(self, answer: Any, service: str) -> None:
        self.answer = answer
        self.service = service

    def __call__(self, request: httpx.Request, **params: str) -> httpx.Response | Awaitable[httpx.Response]:
        request.extensions["path_params"] = params
        answer = self.answer(request)
        if inspect.isawaitable(answer):
            return self._later(answer, request)
        return to_response(204 if answer is None else answer, self.service, _sent(request))

    async def _later(self, pending: Awaitable[Any], request: httpx.Request) -> httpx.Response:
        answer = await pending
        return to_response(204 if answer is None else answer, self.service, _sent(request))

    def __repr__(self) -> str:
        return f"Answer({self.answer!r})"


# == the declared state: rolled back to, proven, fingerprinted =================================
# respx keeps the state to roll back to on a stack (``_snapshots``) of the router and of each
# route, with no public accessor; the functions below read it (respx >= 0.22).


def roll_back(router: respx.Router) -> bool:
    """respx's ``rollback()`` to the snapshot on top of respx's stack (the declared state), which
    stays there for the next reset. A stack the test pushed or popped leaves a depth that
    :func:`router_state` tells from the declared one, and the caller rebuilds the router. False,
    with nothing done, for an empty stack.

    respx's ``snapshot()`` after a rollback would copy every route's state again, a ``CallList``
    (a ``NonCallableMock``, about 15 µs) per route, 0.8 ms for 50 routes; the snapshot just
    rolled back to still holds, so it goes back on the stack. Not for a route whose side effect
    is an iterator: the rollback handed that very iterator to the route, so respx copies it.
    """
    stack = router._snapshots
    if not stack:
        return False
    declared = stack[-1]
    kept = [(route, route._snapshots[-1]) for route in declared[0] if route._snapshots]
    router.rollback()
    stack.append(declared)
    for route, snapshot in kept:
        if isinstance(snapshot[3], Iterator):
            route.snapshot()
        else:
            route._snapshots.append(snapshot)
    return True


def router_state(router: respx.Router) -> tuple[Any, ...]:
    """The router as declared, calls aside, by object identity (and the content of declared
    responses and shorthand answers, which a test can change in place): equal to the state
    taken after the declaration exactly when a rollback has brought everything back."""
    return (
        router._assert_all_called,
        router._assert_all_mocked,
        tuple(router._bases.items()),
        len(router._snapshots),
        len(router.calls),
        tuple(
            (
                id(route),
                route._name,
                id(route._pattern),
                _answer_state(route._return_value),
                _effect_state(route),
                route._pass_through,
                len(route._snapshots),
                len(route.calls),
            )
            for route in router.routes
        ),
    )


def router_print(router: respx.Router) -> tuple[Any, ...]:
    """Everything a test can change on a router, without object identities, so a rebuilt
    router prints as the declared one did."""
    return (
        router._assert_all_called,
        router._assert_all_mocked,
        tuple(sorted((key, repr(pattern)) for key, pattern in router._bases.items())),
        len(router._snapshots),
        len(router.calls),
        tuple(
            (
                route.name,
                repr(route.pattern),
                route.is_pass_through,
                _describe(route.return_value),
                _describe_effect(route),
                route.call_count,
                len(route._snapshots),
            )
            for route in router.routes
        ),
    )


def _remaining(route: respx.Route) -> tuple[Any, ...]:
    # An iterator is read once: read what is left, and put it back as respx's snapshot() does.
    effect: Iterator[Any] = route._side_effect  # type: ignore[assignment]  # checked by the callers
    items = tuple(effect)
    route._side_effect = iter(items)
    return items


def _effect_state(route: respx.Route) -> Any:
    effect = route._side_effect
    if isinstance(effect, Iterator):
        # The declared items with their content: reading the iterator hands a test the
        # declared responses themselves (respx serves copies of them), which it can change.
        return tuple(map(_answer_state, _remaining(route)))
    if isinstance(effect, Answer):
        # The shorthand's own object, which a test reaches as route.side_effect: what it
        # holds counts, not only which one it is.
        return (id(effect), id(effect.answer), effect.service)
    return id(effect)


def _answer_state(value: Any) -> Any:
    """A route's return value by identity, and for a response that of its stream too
    (respx's ``clone_response`` serves that very stream to every request), with its content."""
    if isinstance(value, httpx.Response):
        return (id(value), id(value.stream), _describe(value))
    return (id(value), _describe(value))


def _describe_effect(route: respx.Route) -> Any:
    if isinstance(route._side_effect, Iterator):
        return ("sequence", tuple(_describe(item) for item in _remaining(route)))
    return _describe(route._side_effect)


def _describe(value: Any) -> Any:
    """A comparable stand-in for an answer, a side effect or a client option."""
    # Most frequent first: the reset describes every declared route's return value.
    if value is None:
        return None
    if isinstance(value, httpx.Response):
        # What respx's clone_response serves of it: status, headers, stream and extensions
        # (not ``.content``, which a replaced stream leaves as it was).
        stream = value.stream
        return (
            "response",
            value.status_code,
            tuple(value.headers.raw),
            # A ByteStream (from content, text or JSON) by its bytes; another kind is read
            # only by the request it answers, so its type stands for it.
            stream._stream if isinstance(stream, httpx.ByteStream) else ("stream", type(stream).__qualname__),
            dict(value.extensions),
        )
    if isinstance(value, str | bytes | int | float | list | tuple | dict | Mapping):
        return value
    if isinstance(value, Answer):
        return ("answer", _describe(value.answer))
    if isinstance(value, BaseException):
        return ("raises", type(value).__qualname__, str(value))
    return (
        "callable",
        getattr(value, "__module__", None),
        getattr(value, "__qualname__", type(value).__qualname__),
    )


def client_print(lease: LeaseState) -> Any:
    """The options of the lease's client; a client never made prints as a new one."""
    client = lease.built_client
    if client is None:
        return _new_client_print(lease.client_base_url)
    return _options(client, lease.transport)


@functools.cache
def _new_client_print(base_url: str) -> Any:
    transport = httpx.MockTransport(lambda request: httpx.Response(204))
    return _options(httpx.AsyncClient(transport=transport, base_url=base_url), transport)


def _options(client: httpx.AsyncClient, transport: object) -> tuple[Any, ...]:
    return (
        ("closed", client.is_closed),
        ("base_url", str(client.base_url)),
        ("headers", tuple(client.headers.multi_items())),
        ("cookies", tuple(sorted((c.domain, c.path, c.name, c.value or "") for c in client.cookies.jar))),
        ("auth", _describe(client.auth)),
        ("params", str(client.params)),
        ("timeout", repr(client.timeout)),
        ("follow_redirects", client.follow_redirects),
        ("max_redirects", client.max_redirects),
        ("event_hooks", tuple((k, tuple(map(_describe, v))) for k, v in client.event_hooks.items())),
        ("transport", client._transport is transport),
    )
