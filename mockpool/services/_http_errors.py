"""The http double's error, in a module of its own: both the double and its interception
import it, and neither imports the other at module level."""

from __future__ import annotations

from ..errors import MockPoolError

__all__ = ("UnmatchedRequestError",)


class UnmatchedRequestError(MockPoolError, AssertionError, LookupError):
    """A request matched no route of the leases that could answer it (or was sent from a task
    holding none). Raised as respx's ``AllMockedAssertionError`` too."""
