"""``http_service()``: an ``httpx.AsyncClient`` answered by routes, through ``httpx.MockTransport``.

Nothing is patched globally: each instance has its own transport, so concurrent tests cannot
answer each other's requests. The instance (and what tests receive) is an :class:`HttpDouble`:
``double.client`` is the ``httpx.AsyncClient`` to hand to code under test, ``double.get(...)``
and friends are shortcuts to it, ``double.calls`` is the request history, and a lease can add
its own routes (``double.routes.add(...)``) or a handler (``double.handler = fn``). Reset
clears history, lease routes, the lease handler, cookies and header changes. A client over a
``MockTransport`` holds nothing bound to an event loop, so no per-loop handle is needed.

``double.transport`` is the ``httpx.MockTransport`` itself, for code that builds its own
client; ``http_transport_service()`` pools the routed transport alone (a
:class:`TransportDouble`), for code that wraps transports.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..errors import MockPoolError
from ._common import build_spec, require

if TYPE_CHECKING:
    import httpx

    from ..spec import ServiceSpec

__all__ = (
    "HttpDouble",
    "Route",
    "RouteTable",
    "TransportDouble",
    "UnmatchedRequestError",
    "http_service",
    "http_transport_service",
)

#: What a route answers: an ``httpx.Response``; a dict or list (JSON, 200); an int (that status,
#: empty body); a str (text, 200); bytes (200); a tuple ``(status, body)`` or ``(status, body,
#: headers)``; or a sync or async callable ``(request) -> any of those``. A callable finds the
#: path parameters in ``request.extensions["path_params"]``.
Responder = Any
#: Where routes are given: ``{("GET", "/videos/{id}"): ...}`` or ``{"GET /videos/{id}": ...}``;
#: the method ``"*"`` (or a bare path) matches any method.
RouteKey = str | tuple[str, str]

_PARAM = re.compile(r"\{(\w+)(?::(path))?\}")


class UnmatchedRequestError(MockPoolError, LookupError):
    """A request matched no route, on a service built with ``on_unmatched="raise"``."""


@dataclass(frozen=True)
class Route:
    """One route: a method (``"*"`` for any), a path pattern and what it answers.

    ``{name}`` in the pattern matches one path segment, ``{name:path}`` the rest of the path.
    """

    method: str
    path: str
    response: Responder = field(compare=False)
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", self.method.upper())
        parts, last = [], 0
        for m in _PARAM.finditer(self.path):
            parts.append(re.escape(self.path[last : m.start()]))
            parts.append(f"(?P<{m.group(1)}>{'.*' if m.group(2) else '[^/]+'})")
            last = m.end()
        parts.append(re.escape(self.path[last:]))
        object.__setattr__(self, "regex", re.compile("".join(parts)))

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters if the route answers this request, else None."""
        if self.method not in ("*", method):
            return None
        m = self.regex.fullmatch(path)
        return m.groupdict() if m is not None else None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


class RouteTable:
    """The service's routes plus those a lease added; lease routes win and reset drops them."""

    def __init__(self, base: tuple[Route, ...] = ()) -> None:
        self.base = base
        self.added: list[Route] = []

    def add(self, method: str, path: str, response: Responder) -> Route:
        """Answer ``method path`` with ``response`` for the rest of this lease (checked
        before the service's routes, the latest added first)."""
        route = Route(method, path, response)
        self.added.insert(0, route)
        return route

    def remove(self, route: Route) -> None:
        self.added.remove(route)

    def clear(self) -> None:
        """Drop the routes added during the lease."""
        self.added.clear()

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self:
            params = route.match(method, path)
            if params is not None:
                return route, params
        return None

    def __iter__(self) -> Iterator[Route]:
        yield from self.added
        yield from self.base

    def __len__(self) -> int:
        return len(self.added) + len(self.base)


class TransportDouble:
    """A fake HTTP service as a transport: an ``httpx.MockTransport`` that answers from routes.

    ``double.transport`` is the transport to hand to code that builds or wraps its own client
    (``httpx.AsyncClient(transport=RetryTransport(double.transport))``). A lease may add
    routes (``double.routes.add(...)``) or set a handler (``double.handler = fn``); reset
    drops both and the call history. With only sync responders the transport also serves a
    sync ``httpx.Client``.
    """

    def __init__(
        self,
        httpx_module: Any,
        routes: tuple[Route, ...],
        *,
        name: str,
        on_unmatched: Literal["404", "raise"],
    ) -> None:
        self._httpx = httpx_module
        self.name = name
        self.on_unmatched = on_unmatched
        self.routes = RouteTable(routes)
        #: Every request the transport received during the lease, in order.
        self.calls: list[httpx.Request] = []
        #: A lease-wide handler ``(request) -> response-like``, tried before the routes; when it
        #: returns None the routes answer.
        self.handler: Callable[[httpx.Request], Any] | None = None
        self.transport: httpx.MockTransport = httpx_module.MockTransport(self._handle)

    def calls_to(self, method: str, path: str) -> list[httpx.Request]:
        """The recorded requests with this method and exact path."""
        method = method.upper()
        return [r for r in self.calls if r.method == method and r.url.path == path]

    # -- the transport's handler: sync unless a responder is async ---------------------------

    def _handle(self, request: httpx.Request) -> httpx.Response | Awaitable[httpx.Response]:
        self.calls.append(request)
        if self.handler is not None:
            answer = self.handler(request)
            if inspect.isawaitable(answer):
                return self._after_async_handler(answer, request)
            if answer is not None:
                return self._response(answer, request)
        return self._route(request)

    async def _after_async_handler(self, pending: Awaitable[Any], request: httpx.Request) -> httpx.Response:
        answer = await pending
        if answer is not None:
            return self._response(answer, request)
        response = self._route(request)
        if inspect.isawaitable(response):
            response = await response
        return response

    def _route(self, request: httpx.Request) -> httpx.Response | Awaitable[httpx.Response]:
        found = self.routes.match(request.method, request.url.path)
        if found is None:
            return self._unmatched(request)
        route, params = found
        request.extensions["path_params"] = params
        answer = route.response
        if callable(answer) and not isinstance(answer, self._httpx.Response):
            answer = answer(request)
            if inspect.isawaitable(answer):
                return self._after_async_route(answer, request)
            if answer is None:
                answer = 204
        return self._response(answer, request)

    async def _after_async_route(self, pending: Awaitable[Any], request: httpx.Request) -> httpx.Response:
        answer = await pending
        return self._response(204 if answer is None else answer, request)

    def _unmatched(self, request: httpx.Request) -> httpx.Response:
        known = [str(route) for route in self.routes]
        message = (
            f"service {self.name!r}: no route matches {request.method} {request.url.path}; "
            f"routes: {', '.join(known) or 'none'}; add one with routes.add(method, path, response)"
        )
        if self.on_unmatched == "raise":
            raise UnmatchedRequestError(message)
        return self._httpx.Response(404, json={"error": message, "routes": known})  # type: ignore[no-any-return]

    def _response(self, answer: Any, request: httpx.Request) -> httpx.Response:
        httpx_mod = self._httpx
        if isinstance(answer, httpx_mod.Response):
            # A copy: a Response object is consumed by the request it answers.
            return httpx_mod.Response(  # type: ignore[no-any-return]
                answer.status_code, headers=answer.headers, content=answer.content
            )
        if isinstance(answer, tuple):
            status, body, *rest = answer
            response = self._response(body, request)
            return httpx_mod.Response(  # type: ignore[no-any-return]
                status, headers={**response.headers, **(rest[0] if rest else {})}, content=response.content
            )
        if isinstance(answer, bool):
            raise TypeError(f"service {self.name!r}: a route answered {answer!r}; answer a status or a body")
        if isinstance(answer, int):
            return httpx_mod.Response(answer)  # type: ignore[no-any-return]
        if isinstance(answer, str):
            return httpx_mod.Response(200, text=answer)  # type: ignore[no-any-return]
        if isinstance(answer, bytes):
            return httpx_mod.Response(200, content=answer)  # type: ignore[no-any-return]
        if isinstance(answer, Mapping | list):
            return httpx_mod.Response(200, json=answer)  # type: ignore[no-any-return]
        raise TypeError(
            f"service {self.name!r}: a route for {request.method} {request.url.path} answered a "
            f"{type(answer).__name__}; answer an httpx.Response, a dict or list (JSON), an int "
            "(status), a str, bytes or a (status, body) tuple"
        )

    # -- hooks -------------------------------------------------------------------------------

    def reset(self) -> None:
        self.calls.clear()
        self.routes.clear()
        self.handler = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": len(self.calls),
            "added_routes": tuple(str(route) for route in self.routes.added),
            "handler": self.handler is not None,
        }

    def restore(self, state: object) -> None:
        del state  # the pristine state is the one reset returns to
        self.reset()

    def health(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {len(self.routes)} routes, {len(self.calls)} calls>"


class HttpDouble(TransportDouble):
    """A fake HTTP service: an ``httpx.AsyncClient`` over the routed ``MockTransport``.

    ``double.client`` is the client to hand to code under test, ``double.transport`` its
    transport, ``double.get(...)`` and friends are shortcuts to the client.
    """

    def __init__(
        self,
        httpx_module: Any,
        routes: tuple[Route, ...],
        *,
        name: str,
        base_url: str,
        on_unmatched: Literal["404", "raise"],
    ) -> None:
        super().__init__(httpx_module, routes, name=name, on_unmatched=on_unmatched)
        self.client: httpx.AsyncClient = httpx_module.AsyncClient(transport=self.transport, base_url=base_url)
        self._base_url = self.client.base_url
        self._headers = self.client.headers.copy()

    # -- shortcuts to the client -------------------------------------------------------------

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return await self.client.request(method, url, **kwargs)

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.client.get(url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.client.post(url, **kwargs)

    async def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.client.put(url, **kwargs)

    async def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.client.patch(url, **kwargs)

    async def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.client.delete(url, **kwargs)

    # -- hooks -------------------------------------------------------------------------------

    def reset(self) -> None:
        super().reset()
        client = self.client
        client.cookies.clear()
        if client.headers != self._headers:
            client.headers = self._headers.copy()
        if client.base_url != self._base_url:
            client.base_url = self._base_url

    def snapshot(self) -> dict[str, Any]:
        return {
            **super().snapshot(),
            "cookies": dict(self.client.cookies),
            "headers": tuple(self.client.headers.multi_items()),
            "base_url": str(self.client.base_url),
        }

    def health(self) -> bool:
        return not self.client.is_closed

    async def aclose(self) -> None:
        await self.client.aclose()


def _parse_key(key: RouteKey, service: str) -> tuple[str, str]:
    if isinstance(key, tuple):
        if len(key) != 2:
            raise TypeError(f"service {service!r}: route key {key!r} must be (method, path)")
        return key
    method, _, path = key.strip().partition(" ")
    if not path:  # a bare path: any method
        return "*", method
    return method, path.strip()


def http_service(
    name: str = "http",
    *,
    routes: Mapping[RouteKey, Responder] | None = None,
    on_unmatched: Literal["404", "raise"] = "404",
    base_url: str = "http://testserver",
    min_size: int = 0,
    max_size: int = 64,
    **options: Any,
) -> ServiceSpec:
    """A fake HTTP service answering ``routes`` through ``httpx.MockTransport``.

    :param routes: ``{("GET", "/videos/{id}"): responder}`` or ``{"GET /videos/{id}": ...}``;
        see :data:`Responder` for what a route may answer.
    :param on_unmatched: ``"404"``: a 404 whose JSON lists the routes; ``"raise"``:
        :class:`UnmatchedRequestError` out of the client call.
    :param base_url: the client's base URL; routes match the request's path.
    :raises MissingExtraError: httpx is not installed (``pip install 'mockpool[http]'``).
    """
    httpx_mod, table = _routes(name, routes, on_unmatched)

    def factory() -> HttpDouble:
        return HttpDouble(httpx_mod, table, name=name, base_url=base_url, on_unmatched=on_unmatched)

    return build_spec(
        name,
        options,
        factory=factory,
        reset=HttpDouble.reset,
        health_check=HttpDouble.health,
        snapshot=HttpDouble.snapshot,
        restore=HttpDouble.restore,
        destroy=HttpDouble.aclose,
        min_size=min_size,
        max_size=max_size,
    )


def http_transport_service(
    name: str = "http_transport",
    *,
    routes: Mapping[RouteKey, Responder] | None = None,
    on_unmatched: Literal["404", "raise"] = "404",
    min_size: int = 0,
    max_size: int = 64,
    **options: Any,
) -> ServiceSpec:
    """Like :func:`http_service` without the client: tests receive a :class:`TransportDouble`
    whose ``transport`` (an ``httpx.MockTransport``) goes to code that builds or wraps its own
    client. Routes, ``handler``, ``calls`` and reset work as in :func:`http_service`.

    :raises MissingExtraError: httpx is not installed (``pip install 'mockpool[http]'``).
    """
    httpx_mod, table = _routes(name, routes, on_unmatched)

    def factory() -> TransportDouble:
        return TransportDouble(httpx_mod, table, name=name, on_unmatched=on_unmatched)

    return build_spec(
        name,
        options,
        factory=factory,
        reset=TransportDouble.reset,
        health_check=TransportDouble.health,
        snapshot=TransportDouble.snapshot,
        restore=TransportDouble.restore,
        min_size=min_size,
        max_size=max_size,
    )


def _routes(
    name: str, routes: Mapping[RouteKey, Responder] | None, on_unmatched: str
) -> tuple[Any, tuple[Route, ...]]:
    httpx_mod = require("httpx", extra="http", service=name)
    if on_unmatched not in ("404", "raise"):
        raise ValueError(f"service {name!r}: on_unmatched={on_unmatched!r} must be '404' or 'raise'")
    return httpx_mod, tuple(
        Route(*_parse_key(key, name), response) for key, response in (routes or {}).items()
    )
