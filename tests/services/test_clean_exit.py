"""Closing the pool closes every instance, leaked leases included, and nothing keeps the
interpreter alive afterwards (aiosqlite's worker thread is not a daemon by default)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PRELUDE = """
import asyncio, threading
from sqlalchemy import text
from mockpool import MockPool
from mockpool.services import aiosqlite_service, sqlalchemy_service

def make_pool():
    # Closing waits close_timeout for the leaked leases, then destroys their instances too.
    pool = MockPool(close_timeout=0.05, supervise=False)
    pool.register(aiosqlite_service(schema="create table t (x)", min_size=2))
    pool.register(sqlalchemy_service(min_size=1))
    return pool

async def leak(pool):
    db = await pool.acquire("aiosqlite").__aenter__()   # never released
    await db.execute("insert into t values (1)")       # a transaction left open too
    session = await pool.acquire("sqlalchemy").__aenter__()
    await session.execute(text("create table s (x)"))
    return db, session

def workers():
    return [t for t in threading.enumerate() if "aiosqlite" in t.name]
"""

SCENARIOS = {
    # async with pool: the block ends with two leases still held.
    "async-close": """
async def main():
    async with make_pool() as pool:
        db, session = await leak(pool)
        assert len(workers()) == 3, workers()
    return db

db = asyncio.run(main())
for t in workers():
    t.join(30)
assert not workers(), workers()
assert db._connection is None
print("closed")
""",
    # The pytest plugin's way: leases leaked in one loop, the pool closed from sync code.
    "sync-close": """
pool = make_pool()
async def main():
    await pool.start()
    await leak(pool)
asyncio.run(main())
pool.close()
for t in workers():
    t.join(30)
assert not workers(), workers()
print("closed")
""",
    # Nobody closes the pool at all: the process must still end.
    "never-closed": """
pool = make_pool()
async def main():
    await pool.start()
    await leak(pool)
asyncio.run(main())
assert workers()
print("closed")
""",
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_process_with_a_leaked_lease_exits_promptly_and_quietly(scenario: str) -> None:
    script = textwrap.dedent(PRELUDE) + textwrap.dedent(SCENARIOS[scenario])
    result = subprocess.run(
        [
            sys.executable,
            "-X",
            "dev",
            "-W",
            "error::ResourceWarning",
            "-W",
            "error::DeprecationWarning",
            "-c",
            script,
        ],
        cwd=ROOT,
        capture_output=True,
        check=False,
        text=True,
        timeout=60,  # a hang guard only: a clean run takes well under a second
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "closed"
    if scenario != "never-closed":
        # -X dev shows every ResourceWarning, unclosed-connection log and unawaited coroutine
        # (and asyncio's debug notes on slow steps, such as building the template: not ours).
        noise = [line for line in result.stderr.splitlines() if not line.startswith("Executing <Task")]
        assert noise == []
