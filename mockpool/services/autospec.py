"""``autospec_service(cls)``: pooled ``create_autospec`` mocks, reset with ``reset_mock``.

``create_autospec`` walks the class and builds a signature-checked child per method, which is
slow (tens of milliseconds for a 60-method class); ``reset_mock`` is cheap. The pooled instance
is an :class:`AutospecDouble` holding the mock and what it looked like new; tests receive the
mock itself (through ``bind``). Reset forgets calls, configured return values and side effects,
and undoes attributes the test set or replaced, so signatures stay checked.
"""

from __future__ import annotations

from typing import Any
from unittest import mock

from ..spec import ServiceSpec
from ._common import build_spec

__all__ = ("AutospecDouble", "autospec_service")


class AutospecDouble:
    """A ``create_autospec(cls, instance=True)`` mock and its pristine attributes."""

    __slots__ = ("_attrs", "_children", "mock")

    def __init__(self, cls: type, **autospec_options: Any) -> None:
        m = mock.create_autospec(cls, instance=True, **autospec_options)
        self.mock: Any = m
        self._attrs = {k: v for k, v in vars(m).items() if _is_attribute(k)}
        self._children = dict(m._mock_children)

    def handle(self) -> Any:
        return self.mock

    def reset(self) -> None:
        m = self.mock
        state = vars(m)
        for key in [k for k in state if k not in self._attrs and _is_attribute(k)]:
            del state[key]
        for key, value in self._attrs.items():
            if state.get(key) is not value:
                state[key] = value
        children = m._mock_children
        if len(children) != len(self._children):
            for key in [k for k in children if k not in self._children]:
                del children[key]
        for key, child in self._children.items():
            if children.get(key) is not child:
                children[key] = child
        # reset_mock() walks every child (60 for a 60-method client), each through Mock's slow
        # __setattr__: about 0.4 ms. Only the children a test touched need it; the others are
        # still as create_autospec left them. The parent's own records are reset last.
        for child in children.values():
            if isinstance(child, mock.NonCallableMock) and _touched(child):
                child.reset_mock(return_value=True, side_effect=True)
        if _touched(m) or m.method_calls:
            _reset_own_records(m)

    def snapshot(self) -> dict[str, Any]:
        """Calls, attributes changed or added, and children configured by a test."""
        m = self.mock
        state = vars(m)
        changed = sorted(k for k in state if _is_attribute(k) and state[k] is not self._attrs.get(k))
        children = m._mock_children
        replaced = sorted(k for k in children if children[k] is not self._children.get(k))
        configured = sorted(
            name
            for name, child in (("", m), *children.items())
            if isinstance(child, mock.NonCallableMock) and _configured(child)
        )
        return {
            "calls": list(m.mock_calls),
            "changed": changed,
            "replaced": replaced,
            "configured": configured,
        }

    def restore(self, state: object) -> None:
        del state  # the pristine state is the one reset returns to
        self.reset()

    def health(self) -> bool:
        return isinstance(self.mock, mock.NonCallableMock)

    def __repr__(self) -> str:
        return f"<AutospecDouble {self.mock!r}>"


#: Bookkeeping ``reset_mock`` itself rewrites; everything else public was set by create_autospec
#: or by a test.
_BOOKKEEPING = frozenset(
    ("called", "call_args", "call_count", "call_args_list", "mock_calls", "method_calls")
)


def _is_attribute(name: str) -> bool:
    return not name.startswith("_") and name not in _BOOKKEEPING


def _touched(child: mock.NonCallableMock) -> bool:
    """Called, given a side effect or a return value (even a mock one, made on first call)."""
    state = vars(child)
    return bool(
        state.get("_mock_called")
        or state.get("_mock_mock_calls")
        or state.get("_mock_side_effect") is not None
        or state.get("_mock_return_value", mock.DEFAULT) is not mock.DEFAULT
    )


def _reset_own_records(m: mock.NonCallableMock) -> None:
    """What ``m.reset_mock(return_value=True, side_effect=True)`` does to ``m`` itself, without
    walking its children (the caller reset those that needed it)."""
    ret = vars(m).get("_mock_return_value", mock.DEFAULT)
    if isinstance(ret, mock.NonCallableMock) and ret is not m:
        ret.reset_mock(return_value=True, side_effect=True)
    m.called = False
    m.call_args = None
    m.call_count = 0
    for records in ("mock_calls", "call_args_list", "method_calls"):
        setattr(m, records, mock._CallList())
    m.return_value = mock.DEFAULT
    m.side_effect = None


def _configured(child: mock.NonCallableMock) -> bool:
    """True when a test gave the mock a side effect or a return value that is not a mock."""
    if child._mock_side_effect is not None:
        return True
    value = child._mock_return_value
    return value is not mock.DEFAULT and not isinstance(value, mock.NonCallableMock)


def autospec_service(
    cls: type,
    *,
    name: str | None = None,
    min_size: int = 0,
    max_size: int = 64,
    autospec_options: dict[str, Any] | None = None,
    **options: Any,
) -> ServiceSpec:
    """Pooled ``create_autospec(cls, instance=True)`` mocks; tests receive the mock.

    :param name: the service name (default: the class name).
    :param autospec_options: extra keywords for ``create_autospec`` (e.g. ``spec_set=True``).
    """
    if not isinstance(cls, type):
        raise TypeError(f"autospec_service() needs a class, not {type(cls).__name__}: {cls!r}")
    extra = dict(autospec_options or {})

    def factory() -> AutospecDouble:
        return AutospecDouble(cls, **extra)

    return build_spec(
        name or cls.__name__,
        options,
        factory=factory,
        bind=AutospecDouble.handle,
        reset=AutospecDouble.reset,
        health_check=AutospecDouble.health,
        snapshot=AutospecDouble.snapshot,
        restore=AutospecDouble.restore,
        min_size=min_size,
        max_size=max_size,
    )
