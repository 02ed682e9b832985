"""What a pytest process pays for mockpool's plugin: small suites timed as whole processes.

Run: ``python benchmarks/plugin_cost.py`` (``--runs N`` per variant, default 9; ``--xdist``
for the ``-n 2`` variants; ``--tree PATH``, repeatable, to time those checkouts' ``mockpool``
instead, each first on ``PYTHONPATH``, interleaved: ``--tree ../before --tree .``).

Each variant is a fresh ``python -m pytest -q`` in a suite of 20 tests written to a temporary
directory, timed from outside (``time.perf_counter`` around the subprocess: interpreter,
plugins, collection, tests, summary, exit), the variants interleaved, after one warm-up run
each (bytecode written, mockpool's history in the cache). Reported: the median and the best
wall time, and the median CPU time of the process (user + system, steadier on a busy machine).
Plugins that are not the point are off in every variant (``-p no:randomly -p
no:asyncio-cooperative -p no:looptime_plugin``).

- **pool**: 10 redis and 10 database tests on the ``mockpool`` fixture (``mockpool_services =
  redis database``), as docs/pytest.md writes them.
- **plain**: the same tests on function-scoped fixtures that build a ``FakeAsyncRedis`` and a
  ``sqlite3`` connection, with ``-p no:mockpool``. **plain+plugin**: the same with the plugin
  loaded (installed, unused).
- **pool db / plain db**: 20 database tests only (no fakeredis, which imports numpy itself).
- **floor / floor+plugin**: 20 trivial sync tests, the plugin off, then on.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N = 20
COMMON = ("-q", "-p", "no:randomly", "-p", "no:asyncio-cooperative", "-p", "no:looptime_plugin")
INI = "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"

POOL_REDIS = """
@pytest.mark.asyncio
async def test_redis_{i}(mockpool):
    async with mockpool.acquire("redis") as r:
        assert await r.get("k") is None
        await r.set("k", "v{i}")
        assert await r.get("k") == b"v{i}"
"""
POOL_DB = """
@pytest.mark.asyncio
async def test_db{k}_{i}(mockpool):
    async with mockpool.acquire("database") as db:
        db.execute("create table t (x)")
        db.execute("insert into t values ({i})")
        assert db.execute("select x from t").fetchall() == [({i},)]
"""
PLAIN_FIXTURES = """import sqlite3

import pytest
import pytest_asyncio


@pytest_asyncio.fixture
async def redis():
    import fakeredis

    r = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    yield r
    await r.aclose()


@pytest.fixture
def database():
    db = sqlite3.connect(":memory:")
    yield db
    db.close()

"""
PLAIN_REDIS = """
@pytest.mark.asyncio
async def test_redis_{i}(redis):
    assert await redis.get("k") is None
    await redis.set("k", "v{i}")
    assert await redis.get("k") == b"v{i}"
"""
PLAIN_DB = """
@pytest.mark.asyncio
async def test_db{k}_{i}(database):
    database.execute("create table t (x)")
    database.execute("insert into t values ({i})")
    assert database.execute("select x from t").fetchall() == [({i},)]
"""
FLOOR = "\ndef test_{i}():\n    assert {i} == {i}\n"

SUITES = {
    "pool": (INI + "mockpool_services = redis database\n", "import pytest\n", POOL_REDIS, POOL_DB),
    "plain": (INI, PLAIN_FIXTURES, PLAIN_REDIS, PLAIN_DB),
    "pool_db": (INI + "mockpool_services = database\n", "import pytest\n", POOL_DB, POOL_DB),
    "plain_db": (INI, PLAIN_FIXTURES, PLAIN_DB, PLAIN_DB),
    "floor": (INI, "", FLOOR, ""),
}
OFF = ("-p", "no:mockpool")
VARIANTS = {
    "pool": ("pool", ()),
    "plain": ("plain", OFF),
    "plain+plugin": ("plain", ()),
    "pool db": ("pool_db", ()),
    "plain db": ("plain_db", OFF),
    "floor": ("floor", OFF),
    "floor+plugin": ("floor", ()),
}
XDIST = {
    "pool -n 2": ("pool", ("-n", "2")),
    "plain -n 2": ("plain", (*OFF, "-n", "2")),
    "pool db -n 2": ("pool_db", ("-n", "2")),
    "plain db -n 2": ("plain_db", (*OFF, "-n", "2")),
}


def write_suites(root: Path) -> None:
    for name, (ini, head, first, second) in SUITES.items():
        d = root / name
        d.mkdir()
        (d / "pytest.ini").write_text(ini)
        half = N // 2 if second else N
        body = "".join(
            first.format(i=i, k="a") + (second.format(i=i, k="b") if second else "") for i in range(half)
        )
        (d / "test_suite.py").write_text(head + body)


def run(root: Path, suite: str, extra: tuple[str, ...], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one pytest process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *COMMON, *extra],
        cwd=root / suite,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{suite} {' '.join(extra)} failed:\n{done.stdout}\n{done.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--xdist", action="store_true", help="the -n 2 variants")
    parser.add_argument("--tree", type=Path, action="append", help="a checkout whose mockpool to time")
    args = parser.parse_args()
    base = dict(os.environ)
    base.pop("PYTHONDONTWRITEBYTECODE", None)  # a normal install has its bytecode cached
    envs = {"installed": base}
    if args.tree:
        envs = {}
        for tree in args.tree:
            path = os.pathsep.join(filter(None, [str(tree.resolve()), base.get("PYTHONPATH")]))
            envs[str(tree)] = {**base, "PYTHONPATH": path}
    variants = XDIST if args.xdist else VARIANTS
    # A variant with the plugin off does not depend on the tree: timed with the first only.
    keys = [(t, v) for t in envs for v in variants if t == next(iter(envs)) or OFF[1] not in variants[v][1]]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_suites(root)
        for tree, name in keys:
            run(root, *variants[name], envs[tree])
        times: dict[tuple[str, str], list[tuple[float, float]]] = {key: [] for key in keys}
        for _ in range(args.runs):
            for tree, name in keys:
                times[tree, name].append(run(root, *variants[name], envs[tree]))
    width = max(len(t) for t in envs)
    print(
        f"{'tree':{width}} {'variant':16} {'wall median':>12} {'wall best':>10} {'cpu median':>11}   ms, {args.runs} runs"
    )
    for (tree, name), samples in times.items():
        wall = [w * 1000 for w, _ in samples]
        cpu = [c * 1000 for _, c in samples]
        print(
            f"{tree:{width}} {name:16} {statistics.median(wall):12.0f} {min(wall):10.0f} {statistics.median(cpu):11.0f}"
        )


if __name__ == "__main__":
    main()
