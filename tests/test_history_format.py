"""The history format's versions: a newer document is refused with the fix, an older one is
migrated a step at a time. Version 1 is the only real one, so the migrations here are made up:
each test pretends the current version is later (``VERSION`` patched) and registers its steps."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

import mockpool.history.format as fmt
from mockpool import MockPool
from mockpool.history import History, HistoryFormatError, MockPoolHistoryWarning, RunRecord
from mockpool.history.format import ServiceHistory, TestHistory


def test_the_real_migrations_form_a_chain_up_to_the_current_version() -> None:
    # Each step n -> n + 1 of one unbroken run of versions that ends at VERSION.
    oldest = min(fmt.MIGRATIONS, default=fmt.VERSION)
    assert sorted(fmt.MIGRATIONS) == list(range(oldest, fmt.VERSION))


def _newer() -> dict[str, Any]:
    return {**History().to_dict(), "version": fmt.VERSION + 1}


def test_a_newer_version_is_refused_naming_the_file_the_version_and_the_fix(tmp_path: Path) -> None:
    newer = fmt.VERSION + 1
    path = tmp_path / "history.json"
    path.write_text(json.dumps(_newer()))
    fix = f"version {newer} was written by a newer mockpool, and this one reads up to version {fmt.VERSION}"
    with pytest.raises(HistoryFormatError, match=f"^history: {fix}; upgrade mockpool to use it$"):
        History.from_dict(_newer())
    with pytest.warns(MockPoolHistoryWarning) as record:
        assert History.load(path) == History()
    assert str(path) in str(record[0].message) and f"{fix}; upgrade mockpool" in str(record[0].message)
    with pytest.warns(MockPoolHistoryWarning) as record:
        pool = MockPool(history=path)
    message = str(record[0].message)
    assert str(path) in message and f"{fix}; upgrade mockpool" in message
    assert pool.history_path == tmp_path / f"history.mockpool-v{fmt.VERSION}.json"
    assert json.loads(path.read_text()) == _newer()  # never overwritten
    with pytest.raises(HistoryFormatError, match=f"run: version {newer} was written by a newer"):
        RunRecord.from_dict({**RunRecord(1.0, 0.0).to_dict(), "version": newer})


# A made-up old shape, as version 2 would have to read it if version 1 had been this: each
# service kept its hold times as one pair, and each test a bare list of services.
OLD: dict[str, Any] = {
    "format": "mockpool-history",
    "version": 1,
    "window_s": 1.0,
    "runs": 2,
    "services": {
        "redis": {
            "weight": 1.5,
            "last_run": 2,
            "acquisitions": 10.0,
            "peak": 3.0,
            "hold_s": [0.01, 0.03],
            "demand": [4.0, 6.0],
            "size": 2.0,
        }
    },
    "tests": {"tests/test_a.py::test_x": ["redis"]},
}


def _v1_to_v2(doc: dict[str, Any]) -> dict[str, Any]:
    for service in doc["services"].values():
        service["hold_mean_s"], service["hold_p95_s"] = service.pop("hold_s")
    doc["tests"] = {test: {"services": used, "last_run": doc["runs"]} for test, used in doc["tests"].items()}
    return doc


EXPECTED = History(
    1.0,
    2,
    {"redis": ServiceHistory(1.5, 2, 10.0, 3.0, 0.01, 0.03, (4.0, 6.0), 2.0)},
    {"tests/test_a.py::test_x": TestHistory(("redis",), 2)},
)


@pytest.fixture
def version_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend this mockpool writes version 2: one step, and nothing else of it changed."""
    monkeypatch.setattr(fmt, "VERSION", 2)
    monkeypatch.setitem(fmt.MIGRATIONS, 1, _v1_to_v2)


@pytest.mark.usefixtures("version_2")
def test_an_older_file_is_migrated_by_its_step_and_saved_at_the_current_version(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    path.write_text(json.dumps(OLD))
    before = copy.deepcopy(OLD)
    assert History.from_dict(OLD) == EXPECTED
    assert before == OLD  # the caller's document is left as it was
    history, where = History.open(path)  # no warning: filterwarnings = error
    assert (history, where) == (EXPECTED, path)
    history.save(path)
    assert json.loads(path.read_text())["version"] == 2
    assert History.load(path) == EXPECTED


@pytest.mark.usefixtures("version_2")
def test_a_step_that_fails_on_a_malformed_document_is_a_format_error() -> None:
    bad = copy.deepcopy(OLD)
    bad["services"]["redis"]["hold_s"] = 0.01
    with pytest.raises(HistoryFormatError, match=r"^history: cannot upgrade version 1 to 2: TypeError"):
        History.from_dict(bad)
    with pytest.warns(MockPoolHistoryWarning, match="cannot upgrade version 1 to 2"):
        assert History.from_cache(bad) == History()
    # What a step lets through is still validated as the current version.
    negative = copy.deepcopy(OLD)
    negative["services"]["redis"]["hold_s"] = [-1, 0.03]
    with pytest.raises(HistoryFormatError, match=r"hold_mean_s: expected a non-negative number"):
        History.from_dict(negative)


def test_steps_run_in_order_and_a_version_without_a_step_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fmt, "VERSION", 3)
    seen: list[object] = []

    def step(doc: dict[str, Any]) -> dict[str, Any]:
        seen.append(doc["version"])
        return doc

    with pytest.raises(HistoryFormatError, match="unsupported version 1, expected version 3"):
        fmt.upgrade(OLD, fmt.FORMAT, "history")
    monkeypatch.setitem(fmt.MIGRATIONS, 2, step)
    with pytest.raises(HistoryFormatError, match="unsupported version 1, expected versions 2 to 3"):
        fmt.upgrade(OLD, fmt.FORMAT, "history")
    monkeypatch.setitem(fmt.MIGRATIONS, 1, step)
    assert fmt.upgrade(OLD, fmt.FORMAT, "history")["version"] == 3
    assert seen == [1, 2]
    # A run document lives for one session, between processes of one install: no migrations.
    with pytest.raises(HistoryFormatError, match="run: unsupported version 1, expected version 3"):
        RunRecord.from_dict({**RunRecord(1.0, 0.0).to_dict(), "version": 1})
