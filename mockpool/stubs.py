"""Emergency stubs (recovery tier 4): an autospec of the class tests receive, which keeps its
interface and signatures but does nothing."""

from __future__ import annotations

from .core import Entry

__all__ = ("make_stub",)


def make_stub(template: type, now: float) -> Entry:
    """A degraded entry holding ``create_autospec(template, instance=True)``."""
    from unittest import mock  # tier 4 only: unittest costs about 13 ms to import

    stub = Entry(mock.create_autospec(template, instance=True), now=now)
    stub.tier, stub.degraded = "stub", True
    return stub
