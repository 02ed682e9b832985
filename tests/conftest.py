"""Shared test configuration."""

from __future__ import annotations

import os

# mockpool imports numpy when it first summarises (percentiles, history), which in this suite
# is often inside a pytester in-process run; pytester then drops the modules that run
# imported, and numpy cannot be imported twice in one process ("cannot load module more than
# once per process"). Imported here, it stays.
import numpy  # noqa: F401
from hypothesis import settings

pytest_plugins = ["pytester"]

# CI runs the state machine with many more examples than a local run.
settings.register_profile("ci", max_examples=1000, deadline=None)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
