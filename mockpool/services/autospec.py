"""``autospec_service(cls)``: pooled ``create_autospec`` mocks, restored from a structural snapshot.

``create_autospec`` walks the class and builds a signature-checked child per method, which is
slow (tens of milliseconds for a 60-method class), so the mock is the expensive part and cannot
be replaced per lease. The pooled instance is an :class:`AutospecDouble` holding the mock and a
structural snapshot taken at creation; tests receive the mock itself (through ``bind``).

Clean by construction, for each kind of state a test can reach:

- every mock in the tree (the mock, each method child, an ``AsyncMock``'s ``__code__`` mock):
  its ``__dict__`` (calls, return values and their chains, side effects, attributes set or
  deleted, ``configure_mock``, ``attach_mock``, ``mock_add_spec``, ``seal``) is rebuilt from
  the snapshot whenever it differs from it, with new empty call lists and a new children dict;
- each of those mocks' own class (every mock has one): attributes set on it (a
  ``PropertyMock``, a configured magic method, ``__signature__``) are undone, deleted ones put
  back;
- mocks made during a lease (return-value chains, attributes read for the first time) hang off
  restored state only, so they are dropped with it and made again on next use;
- the call lists of the mocks above a rebuilt one: a call on a mock is recorded in each of them
  (on Python 3.12+ a method's return value is made with the method, and calling it, or a
  method of it, leaves nothing else of the method changed);
- patches (``mock.patch.object``) on a mock of the tree or its class that the lease left
  active are stopped first, so a teardown that stops them after the lease finds nothing to do.

Only the mocks whose state differs are rebuilt; telling them apart is one C-level dict
comparison per mock and per class.
"""

from __future__ import annotations

from collections.abc import Mapping
from operator import is_not
from typing import Any
from unittest import mock

from ..spec import ServiceSpec
from ._common import active_patches, build_spec, end_patches

__all__ = ("AutospecDouble", "autospec_service")

#: Container types a mock keeps its state in and changes in place (call lists, the children
#: dict): the snapshot holds copies, so an append shows as a difference, and a restore hands
#: out new copies.
_CONTAINERS = frozenset((list, dict, mock._CallList))
_LISTS = frozenset((list, mock._CallList))
#: Back-references up the tree: a walk down it must not follow them.
_UPWARD = frozenset(("_mock_parent", "_mock_new_parent"))
#: unittest.mock's list of the patches active (imported above, so the list itself).
_ACTIVE_PATCHES = active_patches()


class _Node:
    """One mock of the tree: what its ``__dict__`` and its class held at creation, and the
    objects they hold now, to find a change by identity in a few C-level passes (``==`` on a
    mock can run, and make, its ``__eq__``).

    A value set, replaced or deleted changes the objects in the mock's (or its class's)
    ``__dict__``; so does a call (``called``, ``call_count``), and a return value made on first
    use. Containers changed in place are watched on the mocks that have children (a child's
    call appends to its parents' records), and checked on the mocks above a changed one; the
    children dict changes length, or, where ``create_autospec`` left placeholders for
    attributes, gets a mock in their place.

    A mock without children (a method: most of the tree) is watched more cheaply: its
    ``__dict__`` by identity, its children dict and its class by length (configuring a magic
    method, or a property set on its class, adds an entry). What gets past that is code that
    appends to a method's call lists by hand or replaces an entry of a method's class in place;
    the fingerprint still sees both.
    """

    __slots__ = (
        "above",
        "children",
        "cls",
        "cls_keys",
        "cls_state",
        "cls_values",
        "containers",
        "has_placeholders",
        "name",
        "obj",
        "parent",
        "placeholders",
        "pristine",
        "record_keys",
        "records",
        "state",
        "values",
    )

    def __init__(self, name: str, obj: mock.NonCallableMock) -> None:
        self.name = name
        self.obj = obj
        self.state: dict[str, Any] = obj.__dict__
        self.pristine = {key: _copy(value) for key, value in self.state.items()}
        #: The containers, copied anew at each restore; of those, the call records.
        self.containers = tuple(key for key, value in self.pristine.items() if type(value) in _CONTAINERS)
        self.record_keys = tuple(
            k for k in self.containers if type(self.pristine[k]) in _LISTS and not self.pristine[k]
        )
        children = self.pristine.get("_mock_children", {})
        self.parent = bool(children)
        self.has_placeholders = any(isinstance(v, mock._SpecState) for v in children.values())
        self.cls = type(obj)
        self.cls_state: Mapping[str, Any] = vars(self.cls)
        self.cls_keys = tuple(self.cls_state)
        self.cls_values = tuple(self.cls_state.values())
        #: The mocks above this one that ``changed`` does not watch for calls: set by ``_tree``.
        self.above: tuple[_Node, ...] = ()
        self._watch()

    def _watch(self) -> None:
        state = self.state
        self.values = tuple(state.values())
        self.records = [state[key] for key in self.record_keys]
        children = state.get("_mock_children", {})
        self.children: tuple[dict[str, Any], int] = (children, len(children))
        self.placeholders = tuple(children.values()) if self.has_placeholders else ()

    def changed(self) -> bool:
        state, cls_state = self.state, self.cls_state
        if len(state) != len(self.values) or any(map(is_not, state.values(), self.values)):
            return True
        children, count = self.children
        if len(children) != count or len(cls_state) != len(self.cls_values):
            return True
        if not self.parent:
            return False
        return (
            any(map(len, self.records))
            or any(map(is_not, children.values(), self.placeholders))
            or any(map(is_not, cls_state.values(), self.cls_values))
        )

    def called_through(self) -> bool:
        """Whether a call on a mock below this one appended to its call lists."""
        return any(map(len, self.records))

    def restore(self) -> None:
        state = self.state
        # Written straight into __dict__: Mock's __setattr__ would add its own bookkeeping.
        state.clear()
        state.update(self.pristine)
        for key in self.containers:
            state[key] = _copy(self.pristine[key])
        self._watch()
        cls, cls_state = self.cls, self.cls_state
        for key in [key for key in cls_state if key not in self.cls_keys]:
            delattr(cls, key)
        for key, value in zip(self.cls_keys, self.cls_values, strict=True):
            if cls_state.get(key, _MISSING) is not value:
                setattr(cls, key, value)


class AutospecDouble:
    """A ``create_autospec(cls, instance=True)`` mock and its structural snapshot."""

    __slots__ = ("_nodes", "_targets", "mock")

    def __init__(self, cls: type, **autospec_options: Any) -> None:
        m = mock.create_autospec(cls, instance=True, **autospec_options)
        self.mock: Any = m
        self._nodes = _tree(m)
        #: What a patch can target in the tree: each mock and each mock's class, by identity.
        self._targets = frozenset(id(x) for node in self._nodes for x in (node.obj, node.cls))

    def handle(self) -> Any:
        return self.mock

    def reset(self) -> None:
        """End the patches of the tree still active, then rebuild every mock, and every mock's
        class, that differs from the snapshot."""
        if _ACTIVE_PATCHES:
            # A patch on the tree (or a PropertyMock patched onto type(m) with create=True)
            # that the teardown would stop after the lease, into an idle mock.
            end_patches(_ACTIVE_PATCHES, self._targets)
        stale = [node for node in self._nodes if node.changed()]
        for node in stale:
            node.restore()
        # A call on a mock is also recorded, in place, in the ``mock_calls`` of each mock above
        # it; a method is not watched for that, so the mocks above a changed one are checked
        # here (on Python 3.12+ a method's return value is made with it: calling it, or a
        # method of it, leaves the method itself unchanged).
        for above in {above for node in stale for above in node.above}:
            if above.called_through():
                above.restore()

    def snapshot(self) -> dict[str, Any]:
        """Calls, attributes changed or added, and children configured by a test: the same
        for any two instances of one class, so a fresh and a reset one compare equal."""
        m = self.mock
        root = self._nodes[0]
        state = vars(m)
        changed = sorted(
            k for k in state if _is_attribute(k) and state[k] is not root.pristine.get(k, _MISSING)
        )
        children = m._mock_children
        pristine_children = root.pristine["_mock_children"]
        replaced = sorted(k for k in children if children[k] is not pristine_children.get(k))
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

    def fingerprint(self) -> dict[str, Any]:
        """Every attribute of every mock of the tree and of its class, keyed ``child.attribute``
        and ``type(child).attribute``, so an isolation failure names what was left behind.
        Mocks made during a lease (a return value and what was configured on it) are
        rendered whole."""
        tree = {id(node.obj) for node in self._nodes}
        out: dict[str, Any] = {}
        for node in self._nodes:
            for key, value in vars(node.obj).items():
                out[f"{node.name}.{key}"] = _comparable(value, tree)
            for key, value in vars(node.cls).items():
                out[f"type({node.name}).{key}"] = _comparable(value, tree)
        return out

    def health(self) -> bool:
        return isinstance(self.mock, mock.NonCallableMock)

    def __repr__(self) -> str:
        return f"<AutospecDouble {self.mock!r}>"


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


def _copy(value: Any) -> Any:
    return type(value)(value) if type(value) in _CONTAINERS else value


def _comparable(value: Any, tree: set[int], seen: frozenset[int] = frozenset()) -> Any:
    """Containers by content (a call appended shows), plain values by value, the tree's mocks
    and other objects by identity (a mock's ``==`` can be configured, and must not hide a
    replacement), mocks made during a lease by identity and content."""
    if type(value) in _CONTAINERS:
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return (type(value).__name__, tuple((k, _comparable(v, tree, seen)) for k, v in items))
    if value is None or type(value) in (str, bytes, int, float, bool):
        return value
    if isinstance(value, mock.NonCallableMock) and id(value) not in tree and id(value) not in seen:
        inner = seen | {id(value)}
        state = tuple((k, _comparable(v, tree, inner)) for k, v in vars(value).items() if k not in _UPWARD)
        return (type(value).__name__, id(value), state)
    return (type(value).__name__, id(value))


def _tree(root: mock.NonCallableMock) -> list[_Node]:
    """Every mock reachable from ``root`` (children, and mocks in a mock's ``__dict__`` such
    as an ``AsyncMock``'s ``__code__``), each with its snapshot."""
    nodes: list[_Node] = []
    seen: set[int] = set()
    pending: list[tuple[str, mock.NonCallableMock]] = [("mock", root)]
    while pending:
        name, obj = pending.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        nodes.append(_Node(name, obj))
        for key, value in vars(obj).items():
            if key in _UPWARD:
                continue
            if key == "_mock_children":
                pending.extend(
                    (f"{name}.{child}", sub)
                    for child, sub in value.items()
                    if isinstance(sub, mock.NonCallableMock)
                )
            elif isinstance(value, mock.NonCallableMock):
                pending.append((f"{name}.{key}", value))
    by_id = {id(node.obj): node for node in nodes}
    for node in nodes:
        above = []
        parent = vars(node.obj)["_mock_new_parent"]
        while id(parent) in by_id:
            if not by_id[id(parent)].parent:  # a parent's call lists are watched already
                above.append(by_id[id(parent)])
            parent = vars(parent)["_mock_new_parent"]
        node.above = tuple(above)
    return nodes


#: Bookkeeping ``reset_mock`` itself rewrites; everything else public was set by create_autospec
#: or by a test.
_BOOKKEEPING = frozenset(
    ("called", "call_args", "call_count", "call_args_list", "mock_calls", "method_calls")
)


def _is_attribute(name: str) -> bool:
    return not name.startswith("_") and name not in _BOOKKEEPING


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
        fingerprint=AutospecDouble.fingerprint,
        min_size=min_size,
        max_size=max_size,
    )
