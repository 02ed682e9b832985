"""``http_service()``: a respx router per pooled instance; httpx intercepted per lease.

Each pooled instance (an :class:`HttpDouble`, or a :class:`TransportDouble` for
``http_transport_service()``) holds a ``respx.Router`` built from the service's declared routes.
Tests use respx's API on ``double.router``: add routes for the lease, change side effects, read
``route.calls``. Requests reach the router through ``double.client`` (an ``httpx.AsyncClient``)
or ``double.transport`` (an ``httpx.MockTransport``), or, with ``intercept=True`` (the default),
from any client the code under test builds itself: respx patches httpcore once while the pool
holds intercepting instances, and each request goes to the router of the lease held by the task
that sent it, so concurrent tests see only their own routes.

Clean by construction:

- routes, side effects, return values, pass-through flags and call records go back to the
  declared state with respx's own ``rollback()`` (its snapshot of the declaration stays on
  respx's stack for the next reset), and are then proven equal to it: the same route objects
  holding the same answers, side effects and settings as right after the declaration. A
  router that is not (a response changed in place, its stream or extensions included, a
  shorthand's answer swapped, respx's snapshot stack pushed or popped by the test, a router
  setting changed) is rebuilt from the declaration. So is a router still answering a request
  when its lease ends (a task left awaiting a slow side effect): that request keeps the old
  router, and its late call record never reaches the next lease.
- the client, the transport, ``on_unmatched`` and the deprecated ``handler`` are new per lease
  (a client over a given transport costs about 15 µs: no SSL context); the old ones are ended,
  so a client kept past its lease raises instead of reaching the next test's routes.
- interception: the lease leaves the task's context at release, and is ended besides.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ServiceConfigError
from ._common import build_spec, require
from ._http_errors import UnmatchedRequestError

if TYPE_CHECKING:
    from contextvars import Token

    import httpx
    import respx

    from ..spec import ServiceSpec
    from ._http_lease import LeaseState

__all__ = (
    "HttpDouble",
    "TransportDouble",
    "UnmatchedRequestError",
    "http_service",
    "http_transport_service",
)

#: What a shorthand route answers: an ``httpx.Response``; a dict or list (JSON, 200); an int (that
#: status, empty body); a str (text, 200); bytes (200); a tuple ``(status, body)`` or ``(status,
#: body, headers)``; or a sync or async callable ``(request) -> any of those`` (None: 204), which
#: finds the path parameters in ``request.extensions["path_params"]``. A static answer becomes
#: the route's respx ``return_value`` (built once, copied per request); a callable, its side effect.
Responder = Any
#: A shorthand route: ``("GET", "/videos/{id}")`` or ``"GET /videos/{id}"``; the method ``"*"``
#: (or a bare path) matches any method; ``{name}`` matches a path segment, ``{name:path}`` the rest.
#: The path may be a whole URL, host included: ``"GET https://api.test/videos/{id}"``.
RouteKey = str | tuple[str, str]
#: The declared routes: a mapping of shorthand routes, or a function that declares them on the
#: instance's ``respx.Router`` with respx's API (called once per instance, so it must build the
#: same routes each time).
Routes = (
    Mapping[str, Responder]
    | Mapping[tuple[str, str], Responder]
    | Mapping[RouteKey, Responder]
    | Callable[["respx.Router"], object]
)
OnUnmatched = Literal["raise", "404"]

_PARAM = re.compile(r"\{(\w+)(?::(path))?\}")
#: The client's base URL when the service has none (its routes then match any host).
_DEFAULT_CLIENT_BASE = "http://testserver"


class TransportDouble:
    """A fake HTTP service as a respx router and a transport, for code that builds or wraps its
    own client: ``httpx.AsyncClient(transport=RetryTransport(double.transport))``.

    ``double.router`` is the instance's ``respx.Router``: add routes for this lease with respx's
    API (``double.router.get("/x").respond(404)``), read ``double.calls`` or ``route.calls``.
    ``double.transport`` is this lease's ``httpx.MockTransport``; with sync side effects only it
    also serves a sync ``httpx.Client``.
    """

    __slots__ = (
        "__weakref__",
        "_base",
        "_client_base_url",
        "_declare",
        "_declared",
        "_declared_on_unmatched",
        "_lease",
        "_let_go",
        "_name",
        "_on_unmatched",
        "_router",
        "_router_base",
    )

    def __init__(
        self,
        name: str,
        declare: Callable[[respx.Router], object],
        *,
        base_url: str | None,
        on_unmatched: OnUnmatched,
        intercept: bool,
    ) -> None:
        import httpx

        from . import _http_lease

        self._name = name
        self._declare = declare
        self._router_base = base_url
        self._base = httpx.URL(base_url) if base_url is not None else None
        self._client_base_url = base_url if base_url is not None else _DEFAULT_CLIENT_BASE
        # The service's setting, which each lease starts from; _on_unmatched is put back to
        # it at reset, should a test set that private slot for the instance.
        self._declared_on_unmatched: OnUnmatched = on_unmatched
        self._on_unmatched: OnUnmatched = on_unmatched
        self._router = self._build_router()
        self._declared = _http_lease.router_state(self._router)
        self._lease = self._new_lease()
        self._let_go: Callable[[], object] | None = (
            _http_lease.INTERCEPTOR.hold(self, name) if intercept else None
        )

    def _build_router(self) -> respx.Router:
        import respx

        router = respx.Router(assert_all_called=False, base_url=self._router_base)
        self._declare(router)
        router.snapshot()  # the declared state, which every reset rolls back to
        return router

    def _new_lease(self) -> LeaseState:
        from ._http_lease import LeaseState

        return LeaseState(
            self._name,
            self._router,
            base=self._base,
            client_base_url=self._client_base_url,
            on_unmatched=self._on_unmatched,
        )

    # -- what tests use ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def router(self) -> respx.Router:
        """The instance's respx router: its routes are back to the declared ones at each lease."""
        return self._router

    @property
    def transport(self) -> httpx.MockTransport:
        """This lease's transport, answered by :attr:`router`; ended with the lease."""
        return self._lease.transport

    @property
    def calls(self) -> respx.models.CallList:
        """respx's record of the lease's calls (``calls.last.request``, ``calls.call_count``)."""
        return self._router.calls

    def calls_to(self, method: str, path: str) -> list[httpx.Request]:
        """The recorded requests with this method and exact path, or whole URL (host
        included, as a route may be given), whatever their query strings."""
        import httpx

        method = method.upper()
        calls = [call.request for call in self._router.calls if call.request.method == method]
        if "://" in path:
            url = str(httpx.URL(path))
            return [r for r in calls if str(r.url.copy_with(query=None, fragment=None)) == url]
        return [r for r in calls if r.url.path == path]

    @property
    def on_unmatched(self) -> OnUnmatched:
        """``"raise"`` (:class:`UnmatchedRequestError`) or ``"404"``; settable for this lease."""
        return self._lease.on_unmatched

    @on_unmatched.setter
    def on_unmatched(self, value: OnUnmatched) -> None:
        self._lease.on_unmatched = _check_on_unmatched(self._name, value)

    @property
    def routes(self) -> _LeaseRoutes:
        """Deprecated: use :attr:`router` (respx's API)."""
        _deprecated(
            self._name,
            "double.routes",
            "double.router (respx's API): double.router.get('/path').respond(...)",
        )
        return _LeaseRoutes(self)

    @property
    def handler(self) -> Callable[[httpx.Request], Any] | None:
        """Deprecated: a lease-wide ``(request) -> answer | None`` tried before the routes."""
        return self._lease.handler

    @handler.setter
    def handler(self, handler: Callable[[httpx.Request], Any] | None) -> None:
        _deprecated(
            self._name,
            "double.handler",
            "a respx route with a side effect: double.router.route().mock(side_effect=fn); "
            "fn returning None falls through to the next route",
        )
        self._lease.handler = handler

    # -- hooks ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """End the lease's transport and client, roll the router back to the declared state and
        prove it equal to it (else rebuild it), and make the next lease's transport."""
        from . import _http_lease as lib

        lease = self._lease
        lease.live = False
        router = self._router
        if lease.in_flight or not lib.roll_back(router) or lib.router_state(router) != self._declared:
            # A request still being answered (a task left awaiting a slow side effect) records
            # its call when it ends: it keeps the old router, where the next lease never sees it.
            # Or the test moved respx's snapshot stack, or changed what a rollback cannot reach
            # (a declared response in place, a router setting): start again from the declaration.
            self._router = router = self._build_router()
            self._declared = lib.router_state(router)
        self._on_unmatched = self._declared_on_unmatched
        self._lease = self._new_lease()

    def fingerprint(self) -> dict[str, Any]:
        """The router (routes, their answers, settings, calls), the instance's ``on_unmatched``
        and the lease's own parts (the client's options and closed state, ``on_unmatched``, the
        deprecated ``handler``), with no object identities: a rebuilt router prints as the
        declared one."""
        from . import _http_lease as lib

        lease = self._lease
        return {
            "router": lib.router_print(self._router),
            "instance on_unmatched": self._on_unmatched,
            "on_unmatched": lease.on_unmatched,
            "handler": lease.handler is not None,
            "client": lib.client_print(lease),
        }

    def restore(self, state: object) -> None:
        del state  # the pristine state is the declared one, which reset returns to
        self.reset()

    def health(self) -> bool:
        from ._http_lease import router_state

        return router_state(self._router) == self._declared

    async def aclose(self) -> None:
        lease = self._lease
        lease.live = False
        client = lease.built_client
        if client is not None:
            await client.aclose()
        if self._let_go is not None:
            self._let_go()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r} {len(self._router.routes)} routes, {len(self._router.calls)} calls>"


class HttpDouble(TransportDouble):
    """A fake HTTP service: a respx router, and an ``httpx.AsyncClient`` over it per lease.

    ``double.client`` is the client to hand to code under test (new for each lease, so its
    options, cookies and closed state never reach the next test); ``double.get(...)`` and friends
    are shortcuts to it.
    """

    __slots__ = ()

    @property
    def client(self) -> httpx.AsyncClient:
        return self._lease.client

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return await self._lease.client.request(method, url, **kwargs)

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self._lease.client.get(url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self._lease.client.post(url, **kwargs)

    async def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self._lease.client.put(url, **kwargs)

    async def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self._lease.client.patch(url, **kwargs)

    async def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self._lease.client.delete(url, **kwargs)


# == deprecated names and shorthand routes ====================================================


class _LeaseRoutes:
    """``double.routes`` of mockpool 0.1 (deprecated): ``add(method, path, answer)`` adds a
    shorthand route to the router for this lease."""

    __slots__ = ("_double",)

    def __init__(self, double: TransportDouble) -> None:
        self._double = double

    def add(self, method: str, path: str, response: Responder) -> respx.Route:
        return _add_shorthand(self._double.router, method, path, response, self._double.name)

    def __iter__(self) -> Iterator[respx.Route]:
        return iter(self._double.router.routes)

    def __len__(self) -> int:
        return len(self._double.router.routes)


def _deprecated(service: str, old: str, new: str) -> None:
    warnings.warn(
        f"service {service!r}: {old} is deprecated since the http double is a respx router; use {new}",
        DeprecationWarning,
        stacklevel=3,
    )


def __getattr__(name: str) -> Any:
    return _moved(name)


def _moved(name: str) -> Any:
    """``Route`` and ``RouteTable``, the hand-written router of mockpool 0.1, now name respx's
    classes, with a DeprecationWarning pointing at the caller."""
    replaced = {"Route": ("respx.Route", "Route"), "RouteTable": ("respx.models.RouteList", "RouteList")}
    if name not in replaced:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    new, attr = replaced[name]
    warnings.warn(
        f"mockpool.services.{name} is deprecated: routes are respx routes now ({new}); declare them "
        "with http_service(routes=...) and add them per lease with double.router.get(...)",
        DeprecationWarning,
        stacklevel=3,  # _moved, a module __getattr__, the caller
    )
    import respx.models

    return getattr(respx.models, attr)


def _parse_key(key: RouteKey, service: str) -> tuple[str, str]:
    if isinstance(key, tuple):
        if len(key) != 2:
            raise TypeError(f"service {service!r}: route key {key!r} must be (method, path)")
        return key
    method, _, path = key.strip().partition(" ")
    if not path:  # a bare path: any method
        return "*", method
    return method, path.strip()


def _add_shorthand(
    router: respx.Router, method: str, path: str, answer: Responder, service: str
) -> respx.Route:
    """A respx route for ``method path`` (``{name}`` parameters allowed) answering ``answer``,
    named ``"METHOD path"`` so ``router["GET /videos/{id}"]`` finds it."""
    import httpx

    from ._http_lease import Answer, to_response

    method = method.upper()
    lookups: dict[str, Any] = {} if method == "*" else {"method": method}
    name = f"{method} {path}"
    if "://" in path:
        # A whole URL: scheme, host and path must match (respx's url=); any query string may
        # follow, as with a path route.
        if _PARAM.search(path):
            lookups["url__regex"] = _regex(path, segment="[^/?#]+", whole=".+?") + r"(?:\?.*)?$"
            # A host lookup makes the route absolute for respx: a router's base_url is not
            # merged into it, so the service's own URL does not hide the host the key names.
            lookups["host"] = httpx.URL(_PARAM.sub("x", path)).host
        else:
            lookups["url"] = path
    elif path.startswith("/"):
        if _PARAM.search(path):
            lookups["path__regex"] = _regex(path, segment="[^/]+", whole=".+") + "$"
        else:
            lookups["path"] = path
    else:
        raise ValueError(
            f"service {service!r}: route {name!r}: the path must start with '/' "
            "('GET /videos/{id}') or be a whole URL ('GET https://api.test/videos/{id}')"
        )
    route = router.route(name=name, **lookups)
    if callable(answer) and not isinstance(answer, httpx.Response):
        return route.mock(side_effect=Answer(answer, service))
    # A static answer is built once; respx answers each request with a copy of it.
    return route.mock(return_value=to_response(answer, service, f"the route {name!r}"))


def _regex(pattern: str, *, segment: str, whole: str) -> str:
    """``pattern`` with each ``{name}`` as a named group matching ``segment`` (``{name:path}``:
    ``whole``, slashes included), the rest literal, anchored at the start."""
    parts, last = ["^"], 0
    for m in _PARAM.finditer(pattern):
        parts.append(re.escape(pattern[last : m.start()]))
        parts.append(f"(?P<{m.group(1)}>{whole if m.group(2) else segment})")
        last = m.end()
    parts.append(re.escape(pattern[last:]))
    return "".join(parts)


def _declaration(name: str, routes: Routes | None, on_unmatched: str) -> Callable[[respx.Router], object]:
    require("httpx", extra="http", service=name)
    respx_module = require("respx", extra="http", service=name)
    _check_on_unmatched(name, on_unmatched)
    if routes is None:
        return _no_routes
    if callable(routes):
        declare: Callable[[respx.Router], object] = routes
    elif isinstance(routes, Mapping):
        table = [(*_parse_key(key, name), answer) for key, answer in routes.items()]

        def declare(router: respx.Router) -> None:
            for method, path, answer in table:
                _add_shorthand(router, method, path, answer, name)

    else:
        raise TypeError(
            f"service {name!r}: routes={routes!r} must be a mapping {{'GET /path': answer}} or a "
            "function that declares routes on a respx.Router"
        )
    declare(respx_module.Router())  # a bad route or answer fails now, when the service is defined
    return declare


def _no_routes(router: respx.Router) -> None:
    del router


def _check_on_unmatched(name: str, value: object) -> OnUnmatched:
    if value not in ("raise", "404"):
        raise ServiceConfigError("on_unmatched", value, "must be 'raise' or '404'", service=name)
    return value


def _lease_hooks(intercept: bool) -> dict[str, Any]:
    """``on_acquire``/``on_release`` that put the lease in the task's context, for interception."""
    if not intercept:
        return {}
    from ._http_lease import enter, leave

    def on_acquire(double: TransportDouble) -> Token[Any]:
        return enter(double._lease)

    def on_release(double: TransportDouble, token: Token[Any]) -> None:
        leave(double._lease, token)

    return {"on_acquire": on_acquire, "on_release": on_release}


# == the specs =================================================================================


def http_service(
    name: str = "http",
    *,
    routes: Routes | None = None,
    base_url: str | None = None,
    on_unmatched: OnUnmatched = "raise",
    intercept: bool = True,
    min_size: int = 0,
    max_size: int = 64,
    **options: Any,
) -> ServiceSpec:
    """A fake HTTP service: a respx router per instance, a new ``httpx.AsyncClient`` per lease.

    :param routes: the declared routes: ``{"GET /videos/{id}": answer, ...}`` (see
        :data:`Responder`), or a function declaring them on the ``respx.Router`` with respx's
        API (``lambda router: router.get("/videos/1").respond(json={...})``).
    :param base_url: the service's URL; routes are relative to it (as with
        ``respx.mock(base_url=...)``) and so is the client. None: routes match any host, and the
        client's base URL is ``http://testserver``.
    :param on_unmatched: ``"raise"``: a request no route matches raises
        :class:`UnmatchedRequestError` (an ``AssertionError``, as respx's); ``"404"``: it gets a
        404 whose JSON lists the routes.
    :param intercept: also answer requests from clients the code builds itself, for the task
        that holds the lease (respx patches httpcore while the pool holds instances).
    :raises MissingExtraError: httpx or respx is not installed (``pip install 'mockpool[http]'``).
    """
    declare = _declaration(name, routes, on_unmatched)

    def factory() -> HttpDouble:
        return HttpDouble(name, declare, base_url=base_url, on_unmatched=on_unmatched, intercept=intercept)

    return build_spec(
        name,
        options,
        factory=factory,
        reset=HttpDouble.reset,
        health_check=HttpDouble.health,
        snapshot=HttpDouble.fingerprint,
        restore=HttpDouble.restore,
        fingerprint=HttpDouble.fingerprint,
        destroy=HttpDouble.aclose,
        min_size=min_size,
        max_size=max_size,
        **_lease_hooks(intercept),
    )


def http_transport_service(
    name: str = "http_transport",
    *,
    routes: Routes | None = None,
    base_url: str | None = None,
    on_unmatched: OnUnmatched = "raise",
    intercept: bool = True,
    min_size: int = 0,
    max_size: int = 64,
    **options: Any,
) -> ServiceSpec:
    """Like :func:`http_service` without the client: tests receive a :class:`TransportDouble`
    whose ``transport`` (an ``httpx.MockTransport``) goes to code that builds or wraps its own
    client. Routes, interception and reset work as in :func:`http_service`.

    :raises MissingExtraError: httpx or respx is not installed (``pip install 'mockpool[http]'``).
    """
    declare = _declaration(name, routes, on_unmatched)

    def factory() -> TransportDouble:
        return TransportDouble(
            name, declare, base_url=base_url, on_unmatched=on_unmatched, intercept=intercept
        )

    return build_spec(
        name,
        options,
        factory=factory,
        reset=TransportDouble.reset,
        health_check=TransportDouble.health,
        snapshot=TransportDouble.fingerprint,
        restore=TransportDouble.restore,
        fingerprint=TransportDouble.fingerprint,
        destroy=TransportDouble.aclose,
        min_size=min_size,
        max_size=max_size,
        **_lease_hooks(intercept),
    )
