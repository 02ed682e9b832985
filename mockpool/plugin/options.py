"""The plugin's options: ``--mockpool-*`` on the command line and ``mockpool_*`` in the ini
file, read and checked once per session into :class:`Settings`; and the hook it declares."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from .builtin_services import BUILTIN_SERVICES, service_option_lines

LeakMode = Literal["fail", "warn", "off"]
LEAK_MODES: tuple[LeakMode, ...] = ("fail", "warn", "off")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    # Also declared by the entry point mockpool.hookspecs (see _hookspecs): whichever loads.
    from .._hookspecs import declare

    declare(pluginmanager)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mockpool", "mockpool: pooled, pre-warmed async test doubles")
    group.addoption(
        "--mockpool-report",
        metavar="PATH",
        default=None,
        help="write the pool's JSON report to PATH at the end of the run (overrides mockpool_report)",
    )
    group.addoption(
        "--mockpool-leaks",
        choices=LEAK_MODES,
        default=None,
        help="what a lease still held when its test ends does: fail (default), warn, off",
    )
    parser.addini(
        "mockpool_services",
        "built-in services to register, by name: " + " ".join(BUILTIN_SERVICES),
        type="args",
        default=[],
    )
    parser.addini(
        "mockpool_acquire_timeout", "default acquire wait bound in seconds, or 'none' (30)", default="30"
    )
    parser.addini(
        "mockpool_max_total",
        "bound on live instances across all services and xdist workers (divided among workers); "
        "'none' for no bound",
        default="none",
    )
    parser.addini(
        "mockpool_max_size",
        "bound on live instances of each built-in service across xdist workers (default: the service's own)",
        default="none",
    )
    parser.addini(
        "mockpool_history",
        "learn from earlier runs (kept in pytest's cache under mockpool/)",
        type="bool",
        default=True,
    )
    parser.addini(
        "mockpool_warm",
        "pre-create what history and @pytest.mark.mockpool say the tests need, ahead of them",
        type="bool",
        default=True,
    )
    parser.addini(
        "mockpool_supervise", "run the pool's supervisors in each test's loop", type="bool", default=True
    )
    parser.addini("mockpool_leaks", "lease held past its test: fail, warn or off", default="fail")
    parser.addini(
        "mockpool_report", "write the JSON report to this path (relative to the ini file)", default=""
    )
    parser.addini(
        "mockpool_summary", "print the mockpool section of the terminal summary", type="bool", default=True
    )
    parser.addini(
        "mockpool_isolation_verify",
        "after each reset, compare the instance's snapshot with its pristine one and fail the test "
        "that left state behind (slower: for finding a leaky reset)",
        type="bool",
        default=False,
    )
    parser.addini(
        "mockpool_fix_cooperative_wait",
        "make pytest-asyncio-cooperative's scheduler wait instead of spin (its issue #84), "
        "where its installed version has the flipped timeout",
        type="bool",
        default=True,
    )
    parser.addini(
        "mockpool_service_options",
        "options of the built-in services, one per line: SERVICE.OPTION = VALUE "
        "(e.g. redis.decode_responses = true)",
        type="linelist",
        default=[],
    )


@dataclass(frozen=True, slots=True)
class Settings:
    services: tuple[str, ...]
    acquire_timeout: float | None
    max_total: int | None
    max_size: int | None
    history: bool
    warm: bool
    supervise: bool
    leaks: LeakMode
    report: Path | None
    summary: bool
    isolation_verify: bool
    #: ``mockpool_service_options``: per built-in service, option name -> the raw ini value.
    service_options: Mapping[str, Mapping[str, str]]

    @staticmethod
    def read(config: pytest.Config) -> Settings:
        services = tuple(str(s) for s in config.getini("mockpool_services"))
        unknown = [s for s in services if s not in BUILTIN_SERVICES]
        if unknown:
            raise pytest.UsageError(
                f"mockpool_services: unknown built-in service {', '.join(map(repr, unknown))}; the "
                f"built-ins are {', '.join(BUILTIN_SERVICES)}. Register your own services with "
                "the pytest_mockpool_register(pool, config) hook in a conftest.py"
            )
        leaks = config.getoption("mockpool_leaks") or str(config.getini("mockpool_leaks")).strip().lower()
        if leaks not in LEAK_MODES:
            raise pytest.UsageError(f"mockpool_leaks = {leaks!r}: use one of {', '.join(LEAK_MODES)}")
        report: Path | None = None
        if cli_report := config.getoption("mockpool_report"):
            report = config.invocation_params.dir / cli_report
        elif ini_report := str(config.getini("mockpool_report")).strip():
            base = config.inipath.parent if config.inipath is not None else config.rootpath
            report = base / ini_report
        return Settings(
            services=services,
            acquire_timeout=_number(config, "mockpool_acquire_timeout", float, minimum=0.0, exclusive=True),
            max_total=_number(config, "mockpool_max_total", int, minimum=1),
            max_size=_number(config, "mockpool_max_size", int, minimum=1),
            history=flag(config, "mockpool_history"),
            warm=flag(config, "mockpool_warm"),
            supervise=flag(config, "mockpool_supervise"),
            leaks=leaks,
            report=report,
            summary=flag(config, "mockpool_summary"),
            isolation_verify=flag(config, "mockpool_isolation_verify"),
            service_options=service_option_lines(config.getini("mockpool_service_options"), services),
        )


def flag(config: pytest.Config, name: str) -> bool:
    """A bool ini option; a bad value is a usage error that names the option (pytest's own
    error says only "invalid truth value 'maybe'", leaving the user to find which)."""
    try:
        return bool(config.getini(name))
    except (ValueError, pytest.UsageError) as exc:  # pytest >= 9.2 raises UsageError itself
        raise pytest.UsageError(f"{name}: {exc}; use true or false") from None


def _number(
    config: pytest.Config, name: str, kind: type[int | float], *, minimum: float, exclusive: bool = False
) -> Any:
    raw = str(config.getini(name)).strip()
    if raw.lower() in ("", "none"):
        return None
    try:
        value = kind(raw)
    except ValueError:
        value = None
    # NaN compares false with every bound: refused by name, not by comparison.
    if value is None or math.isnan(value) or value < minimum or (exclusive and value == minimum):
        bound = f"> {minimum:g}" if exclusive else f">= {minimum:g}"
        noun = "a whole number" if kind is int else "a number of seconds"
        raise pytest.UsageError(f"{name} = {raw!r}: use {noun} {bound}, or 'none'")
    return value
