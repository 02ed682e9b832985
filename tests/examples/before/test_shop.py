"""The shop's tests on the classic per-test schema fixture (bodies in ``tests/examples/cases.py``)."""

from __future__ import annotations

import pytest

from ..cases import *

pytestmark = pytest.mark.asyncio
