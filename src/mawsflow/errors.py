"""The small family of errors a step raises for bad input, shared by every layer.

A fault of the same kind raises the same class wherever it is found, so that callers (the
command line, the pipeline's task runtime) can tell "the configuration is wrong" from "a file
is malformed" from "the store failed" (`mawsflow.storage.StorageError` and its subclasses).
Both classes below are `ValueError`s, so code that catches `ValueError` keeps working.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the dotted key."""


class DataFormatError(ValueError):
    """A data file, shard, manifest or checkpoint is not laid out as expected; the message
    names the file (or artifact) and what is wrong with it."""
