"""Public names that load on first use (PEP 562), for ``mockpool`` and ``mockpool.services``."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module

__all__ = ("lazy_attribute",)


def lazy_attribute(package: str, where: Mapping[str, str], name: str) -> object:
    """``package.name``: a public name from the module ``where`` says defines it, or a
    submodule (as ``mockpool.services.redis`` was once the package imported it).

    Looked up on each use, never kept in the package's globals: a module imported here may be
    dropped from ``sys.modules`` and imported anew (pytester's in-process runs restore
    ``sys.modules`` after each), and a kept ``ServiceSpec`` would then be another class than
    the pool's own."""
    module = where.get(name)
    if module is not None:
        return getattr(import_module(f"{package}.{module}"), name)
    if name.startswith("__"):
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    try:
        return import_module(f"{package}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{package}.{name}":
            raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
