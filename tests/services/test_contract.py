from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mockpool import MockPoolError, ServiceSpec
from mockpool.clock import FakeClock as CoreFakeClock
from mockpool.services import (
    DEVICE_SESSION_SCHEMA,
    Dashboard,
    DeviceSessionService,
    HttpDouble,
    JwtDouble,
    TransportDouble,
    aiosqlite_service,
    autospec_service,
    device_session_service,
    http_service,
    http_transport_service,
    jwt_service,
    redis_service,
    server_of,
    sql_service,
    sqlalchemy_service,
    sync_redis_service,
)
from mockpool.services.registry import seed_specs
from mockpool.testing import ContractError, FakeClock, check_double_contract


class Mailer:
    def send(self, to: str, body: str) -> bool:
        raise NotImplementedError

    async def flush(self) -> int:
        raise NotImplementedError


async def _dirty_redis(r: Any) -> None:
    await r.set("new", "1")
    await r.hset("profile", "name", "mallory")
    await r.execute_command("SELECT", 2)
    await r.set("other-db", "1", ex=60)
    server = server_of(r)
    server.script_cache[b"sha1"] = b"return 1"
    server.connected = False


def _dirty_sync_redis(r: Any) -> None:
    r.set("new", "1")
    r.hset("profile", "name", "mallory")
    server_of(r).script_cache[b"sha1"] = b"return 1"


def _dirty_sql(db: sqlite3.Connection) -> None:
    db.execute("insert into t values (99)")
    db.execute("create table scratch (x)")


async def _dirty_aiosqlite(db: Any) -> None:
    await db.execute("insert into t values (99)")  # left uncommitted
    await db.execute("pragma user_version = 7")
    db.row_factory = sqlite3.Row


async def _dirty_sqlalchemy(session: Any) -> None:
    await session.execute(text("insert into t values (99)"))
    await session.commit()
    session.add(_Row(x=5))
    await session.flush()  # a transaction left open, an object in the identity map
    session.info["k"] = 1


def _dirty_jwt(tokens: JwtDouble) -> None:
    tokens.revoke(tokens.sign({"sub": "u1"}))


async def _dirty_http(api: HttpDouble) -> None:
    api.router.get("/lease").respond(200)
    api.router["GET /a"].respond(500)
    await api.get("/a")
    api.client.headers["x-test"] = "1"


def _dirty_transport(fake: TransportDouble) -> None:
    fake.router.get("/lease").respond(200)
    fake.on_unmatched = "404"


def _dirty_autospec(m: Any) -> None:
    m.send("a@example.com", "hi")
    m.send.return_value = False
    m.flush.side_effect = RuntimeError
    m.extra = 1


async def _dirty_sessions(sessions: DeviceSessionService) -> None:
    session = await sessions.create_session("u1", "phone")
    await sessions.refresh(session.token)


async def _dirty_dashboard(dashboard: Dashboard) -> None:
    await dashboard.summary("u1")
    dashboard.db.execute("insert into users (id, name) values ('u9', 'Zed')")


class _Base(DeclarativeBase):
    pass


class _Row(_Base):
    __tablename__ = "t"
    x: Mapped[int] = mapped_column(primary_key=True)


@dataclass(frozen=True)
class Case:
    spec: ServiceSpec
    mutate: Callable[[Any], Any]
    members: tuple[ServiceSpec, ...] = field(default=())


_SEED = {spec.name: spec for spec in seed_specs()}

CASES = {
    "redis": Case(redis_service(seed={"profile": {"name": "alice"}, "a": "1"}), _dirty_redis),
    "redis-sync": Case(sync_redis_service(seed={"profile": {"name": "alice"}, "a": "1"}), _dirty_sync_redis),
    "sql": Case(sql_service(schema="create table t (x)", seed="insert into t values (1)"), _dirty_sql),
    "aiosqlite": Case(
        aiosqlite_service(schema="create table t (x)", migrations=["insert into t values (1)"]),
        _dirty_aiosqlite,
    ),
    "sqlalchemy": Case(
        sqlalchemy_service(metadata=_Base.metadata, seed={"t": [{"x": 1}]}), _dirty_sqlalchemy
    ),
    "jwt-hs256": Case(jwt_service(), _dirty_jwt),
    "jwt-rs256": Case(jwt_service(algorithm="RS256"), _dirty_jwt),
    "http": Case(http_service(routes={"GET /a": {"a": 1}}), _dirty_http),
    "http-transport": Case(http_transport_service(routes={"GET /a": {"a": 1}}), _dirty_transport),
    "autospec": Case(autospec_service(Mailer), _dirty_autospec),
    "device_session": Case(
        device_session_service(),
        _dirty_sessions,
        (redis_service(), jwt_service(), sql_service(schema=DEVICE_SESSION_SCHEMA)),
    ),
    "dashboard": Case(
        _SEED["dashboard"], _dirty_dashboard, (_SEED["database"], _SEED["cache"], _SEED["plex"])
    ),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_every_built_in_keeps_the_double_contract(case: Case) -> None:
    await check_double_contract(case.spec, mutate=case.mutate, members=case.members)


def _broken_spec(**overrides: Any) -> ServiceSpec:
    """A double whose reset forgets ``extra``."""

    class Box:
        def __init__(self) -> None:
            self.items: list[int] = []
            self.extra: list[int] = []

    hooks: dict[str, Any] = {
        "factory": Box,
        "reset": lambda box: box.items.clear(),
        "snapshot": lambda box: {"items": list(box.items), "extra": list(box.extra)},
        "restore": lambda box, state: box.items.clear(),
    }
    return ServiceSpec(name="box", **{**hooks, **overrides})


@pytest.mark.asyncio
async def test_a_reset_that_misses_state_fails_naming_the_service_and_the_difference() -> None:
    with pytest.raises(ContractError) as info:
        await check_double_contract(_broken_spec(), mutate=lambda box: box.extra.append(1))
    message = str(info.value)
    assert "service 'box': after reset the snapshot differs from a fresh one" in message
    assert "extra: fresh [] != now [1]" in message
    assert "items" not in message.split(":", 2)[2]  # only what differed is shown
    assert issubclass(type(info.value), AssertionError)  # plain asserts and pytest catch it
    assert issubclass(type(info.value), MockPoolError)


@pytest.mark.asyncio
async def test_a_mutate_the_snapshot_cannot_see_is_reported() -> None:
    with pytest.raises(ContractError, match="mutate\\(\\) changed nothing the snapshot sees"):
        await check_double_contract(_broken_spec(), mutate=lambda box: None)


@pytest.mark.asyncio
async def test_fresh_instances_that_differ_are_reported() -> None:
    counter = iter(range(100))
    spec = _broken_spec(snapshot=lambda box: next(counter), reset=None)
    with pytest.raises(ContractError, match="two fresh instances have different snapshots: fresh 0 != now 1"):
        await check_double_contract(spec)


@pytest.mark.asyncio
async def test_unhealthy_fresh_instance_is_reported() -> None:
    with pytest.raises(ContractError, match="service 'box': health check of a fresh instance returned False"):
        await check_double_contract(_broken_spec(health_check=lambda box: False))


@pytest.mark.asyncio
async def test_a_spec_without_snapshot_or_a_group_without_members_is_refused() -> None:
    with pytest.raises(ContractError, match="needs snapshot= and restore= hooks"):
        await check_double_contract(ServiceSpec(name="plain", factory=object))
    with pytest.raises(ContractError, match=r"pass the member specs \(missing: 'redis', 'jwt', 'database'\)"):
        await check_double_contract(device_session_service())
    with pytest.raises(ContractError, match="has no depends_on"):
        await check_double_contract(jwt_service(), members=[jwt_service()])


@pytest.mark.asyncio
async def test_async_hooks_are_awaited() -> None:
    class Store:
        def __init__(self) -> None:
            self.data: dict[str, int] = {}

    async def reset(store: Store) -> None:
        store.data.clear()

    async def snapshot(store: Store) -> dict[str, int]:
        return dict(store.data)

    async def restore(store: Store, state: dict[str, int]) -> None:
        store.data = dict(state)

    async def mutate(store: Store) -> None:
        store.data["k"] = 1

    spec = ServiceSpec(name="store", factory=Store, reset=reset, snapshot=snapshot, restore=restore)
    await check_double_contract(spec, mutate=mutate)


def test_testing_reexports_the_fake_clock() -> None:
    assert FakeClock is CoreFakeClock


class _Tables(DeclarativeBase):
    pass


@pytest.mark.parametrize(
    ("make", "wrong", "keyword"),
    [
        (sql_service, "create table users (id integer primary key)", "schema"),
        (aiosqlite_service, "CREATE TABLE t(id);", "schema"),
        (sqlalchemy_service, _Tables.metadata, "metadata"),
    ],
    ids=["sql-schema", "aiosqlite-schema", "sqlalchemy-metadata"],
)
def test_what_belongs_to_a_keyword_passed_as_the_name_is_refused_naming_the_keyword(
    make: Callable[..., ServiceSpec], wrong: object, keyword: str
) -> None:
    """The name is the only positional parameter: SQL text or a MetaData given there would
    make a service under a name nobody asks for, with no tables."""
    with pytest.raises(
        MockPoolError, match=rf"pass it as {keyword}= \({make.__name__}\({keyword}=\.\.\.\)\)"
    ):
        make(wrong)


@pytest.mark.parametrize("name", ["database", "my-db", "db_2", "orders.v2"])
def test_ordinary_names_pass_the_positional_check(name: str) -> None:
    assert sql_service(name).name == name
