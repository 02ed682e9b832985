"""pytest-xdist: which process of the run this one is, the history the controller hands each
worker (so all warm from the same one), and what each worker reports back at its end for the
controller to merge, print and write once. The controller runs no tests and has no pool."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pytest

from .state import get_state

if TYPE_CHECKING:
    from .state import State


def processes(config: pytest.Config) -> tuple[str | None, int, bool]:
    """This process in the run: its worker id (``gw0``..., None unless an xdist worker), how
    many processes share the run (xdist's worker count, else 1), and whether it is the xdist
    controller."""
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None:
        return str(workerinput.get("workerid", "gw?")), int(workerinput.get("workercount", 1)), False
    numprocesses = getattr(config.option, "numprocesses", None)
    distributed = (
        isinstance(numprocesses, int) and numprocesses > 0 and getattr(config.option, "dist", "no") != "no"
    )
    workers = int(numprocesses) if distributed else 1  # type: ignore[arg-type]
    return None, workers, distributed


def report_to_controller(state: State) -> bool:
    """On an xdist worker, at the session's end: hand what this process reported to the
    controller (``pytest_testnodedown`` there), and say so; elsewhere, do nothing."""
    workeroutput: dict[str, Any] | None = getattr(state.config, "workeroutput", None)
    if workeroutput is None:
        return False
    if state.outputs:
        out = state.outputs[-1]
        workeroutput["mockpool_run"] = out.pop("run")
        workeroutput["mockpool_stats"] = out
    return True


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: hand each worker the history, so all warm from the same one."""
    state = get_state(node.config)
    if state is not None and state.history is not None and state.history.runs:
        node.workerinput["mockpool_history"] = state.history.to_dict()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist controller: keep what a finished worker reported."""
    state = get_state(node.config)
    output: Mapping[str, Any] | None = getattr(node, "workeroutput", None)
    if state is None or not output or "mockpool_stats" not in output:
        return
    stats = dict(output["mockpool_stats"])
    stats["run"] = output.get("mockpool_run")
    state.outputs.append(stats)
