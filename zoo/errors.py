"""The project's error types: every bad input ends in one of these, with a message naming the fix.

Command-line entry points turn a `ZooError` into one or two lines and exit status 2 (no
traceback); anything else is a bug. Each type also subclasses the builtin a caller would catch
for it (`ValueError`, `FileNotFoundError`, ...), so code written against the builtins still works.
"""
from __future__ import annotations


class ZooError(Exception):
    """Base of every error raised for bad input: a config, data, weights, a checkpoint or a workdir."""


class ConfigError(ZooError, ValueError):
    """A config field is unknown, mistyped or impossible; the message names it and the fix."""


class DataError(ZooError, ValueError):
    """A data source spec, file or folder cannot be read as asked; the message names it and the fix."""


class WeightsError(ZooError, ValueError):
    """A weights file (safetensors export, torch file, download) is malformed, mismatched or unverified."""


class CheckpointError(ZooError):
    """A run's checkpoints cannot be used as asked (none yet, or made by an incompatible config)."""


class WorkdirError(ZooError):
    """A workdir is missing, not a directory, not writable, or holds no run."""
