"""Typed errors a user can cause.

Every message says what is wrong *and* how to fix it. The app shows ``str(err)`` as a
readable message and the CLI prints it without a traceback, so messages are written for
a person, not a developer.

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


class AttrcoreError(ValueError):
    """Base class of every error a user can cause and fix."""


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
