"""Shared test configuration."""

from __future__ import annotations

import os

from hypothesis import settings

# pytest_plugins = ["pytester"] and the numpy import that pytester's in-process runs need are
# in the root conftest.py (pytest_plugins is only allowed there).

# CI runs the state machine with many more examples than a local run.
settings.register_profile("ci", max_examples=1000, deadline=None)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
