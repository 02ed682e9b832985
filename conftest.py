"""Root conftest: the Python code blocks of README.md and docs/*.md run as tests (Sybil).

A block runs in its document's namespace, after the blocks above it. A block whose first line
names a file (``# conftest.py``, ``# test_users.py``, ``# pytest.ini``, ``# pyproject.toml``)
is a file of a small pytest project instead: it is kept, and a test file runs that project
with pytest, in a subprocess in a temporary directory, which must pass. A block that cannot
run here says why in a visible Sybil directive above it: ``<!-- skip: next "reason" -->``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

# mockpool imports numpy lazily, often inside the plugin tests' pytester in-process runs,
# which drop the modules they imported; numpy cannot be imported twice in one process.
import numpy  # noqa: F401
from sybil import Example, Sybil
from sybil.evaluators.python import PythonEvaluator
from sybil.parsers.markdown import CodeBlockParser, SkipParser

pytest_plugins = ["pytester"]

#: ``# <file name>`` on the first line of a block: a file of the document's pytest project.
_FILE = re.compile(r"#\s*(?P<name>[\w.-]+\.(?:py|ini|toml|cfg))\b")

#: Plugins that are installed for this repository's own tests but that a reader's project would
#: not have, or that the project's own configuration turns off.
_DOC_RUN_FLAGS = (
    "-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:asyncio-cooperative",
    "-p", "no:looptime_plugin", "-p", "no:xdist",
)  # fmt: skip


class DocBlock:
    """Evaluates a code block: Python in the document's namespace, or a project file."""

    def __init__(self) -> None:
        self.python = PythonEvaluator()

    def __call__(self, example: Example) -> None:
        source = str(example.parsed)
        first = source.split("\n", 1)[0]
        named = _FILE.match(first)
        if named is None:
            if example.region.lexemes.get("arguments") == "python":
                self.python(example)
            return
        files: dict[str, str] = example.namespace.setdefault("__project_files__", {})
        name = named["name"]
        files[name] = source
        if name.startswith("test_") and name.endswith(".py"):
            _run_project(files, name)


def _run_project(files: dict[str, str], test_file: str) -> None:
    """Run ``test_file`` of the document's project with pytest (warnings are errors)."""
    with tempfile.TemporaryDirectory(prefix="mockpool-docs-") as tmp:
        for name, text in files.items():
            Path(tmp, name).write_text(text, encoding="utf-8")
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-W", "error", *_DOC_RUN_FLAGS, test_file],
            cwd=tmp,
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )
    if done.returncode != 0:
        raise AssertionError(
            f"the project of {sorted(files)} failed (pytest exit {done.returncode}):\n"
            + done.stdout[-4000:]
            + done.stderr[-2000:]
        )


_block = DocBlock()

pytest_collect_file = Sybil(
    parsers=[
        CodeBlockParser(language="python", evaluator=_block),
        CodeBlockParser(language="ini", evaluator=_block),
        CodeBlockParser(language="toml", evaluator=_block),
        SkipParser(),
    ],
    patterns=["README.md", "docs/*.md"],
    # A copy of the project's design contract, kept word for word: its two blocks are API
    # sketches whose names (make_redis, JwtFake...) are left to the reader.
    excludes=["docs/design.md"],
).pytest()


def pytest_configure(config: object) -> None:
    """Under xdist, send each file's tests to one worker (``--dist loadfile``): a document's
    blocks build on the ones above them, in one namespace, so they cannot be split."""
    option = getattr(config, "option", None)
    if getattr(option, "dist", None) == "load":
        option.dist = "loadfile"  # type: ignore[union-attr]
