"""Errors in what the user gave (configs, files, data) as opposed to bugs.

The launchers print a `UserError` as one line (`error: config.costs: ...`) and exit non-zero; any
other exception is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input: a config field, a file, a dataset. The message names the offending thing."""


class ConfigError(UserError, ValueError):
    """An invalid config field; `field` is its dotted path (e.g. `config.train.batch_size`)."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")

    def under(self, prefix: str) -> "ConfigError":
        """The same error with `prefix.` put before the field (the parser knows where a dataclass sits)."""
        return ConfigError(f"{prefix}.{self.field}", self.message)


class TrainingDivergedError(UserError, FloatingPointError):
    """A non-finite loss or gradient: the run stops, its last good checkpoint is kept."""
