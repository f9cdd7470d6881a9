"""Typed errors a user can cause.

Every message says what is wrong *and* how to fix it. The app shows the message as a
readable note and the CLI prints it without a traceback, so messages are written for a
person, not a developer; options are named by their Python names in backticks, which each
front end renders in its own words (:meth:`AttrcoreError.render`).

Hierarchy::

    AttrcoreError (ValueError)
    ├── DataError          malformed or unusable data (NaNs, missing column, one class)
    ├── ConfigError        an impossible or out-of-range setting
    ├── ShapeError         arrays that do not match a model or a saved run
    ├── RunNotFoundError   a run name that is not in the store (also a KeyError)
    ├── DivergenceError    training diverged; nothing was saved
    └── CancelledError     the user cancelled a long job; nothing was saved
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_OPTION = re.compile(r"`([a-z][a-z0-9_]*)`")


class AttrcoreError(ValueError):
    """Base class of every error a user can cause and fix.

    A message names the options it is about by their Python names in backticks (e.g.
    ``raise `memory_budget_mb```); :meth:`render` rewrites them in the words of a front end
    (the CLI's flags, the app's widget labels).
    """

    def render(self, names: Mapping[str, str]) -> str:
        """The message with each ```option``` replaced by ``names[option]`` (unknown ones stay)."""
        return _OPTION.sub(lambda m: names.get(m.group(1), m.group(0)), str(self))


class DataError(AttrcoreError):
    """The data cannot be used as given."""


class ConfigError(AttrcoreError):
    """A setting is impossible or out of range."""


class ShapeError(AttrcoreError):
    """Array shapes do not match the model or the saved run."""


class RunNotFoundError(AttrcoreError, KeyError):
    """No run of that name exists in the store."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class DivergenceError(AttrcoreError):
    """Training produced a non-finite loss or parameters."""


class CancelledError(AttrcoreError):
    """A long job was cancelled through its progress callback."""
