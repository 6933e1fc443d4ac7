"""The exceptions rustml_nb raises: one base class, one subclass per kind of bad input.

Each also derives from the built-in exception a caller would expect (``ValueError``,
``FileNotFoundError``), so ``except ValueError`` keeps working for people who do not know ours.
"""

from __future__ import annotations


class RustmlError(Exception):
    """Base class of every error rustml_nb raises on purpose."""


class CheckpointError(RustmlError, ValueError):
    """A weight file is unreadable: truncated, corrupted, or its header contradicts its data."""


class UnsupportedDtypeError(CheckpointError):
    """A tensor is stored in a dtype rustml_nb cannot read (e.g. F8_E4M3)."""


class MissingFileError(RustmlError, FileNotFoundError):
    """A file the checkpoint needs (config.json, a weight file, a shard) is not there."""


class UnreadableFileError(RustmlError, PermissionError):
    """A file is there but cannot be read (permissions, an I/O error)."""


class ConfigError(RustmlError, ValueError):
    """config.json is for another model type, or holds a value PatchTST cannot run with."""


class WeightMappingError(RustmlError, ValueError):
    """Checkpoint names do not match what the config needs: unmapped, missing or unexpected keys."""

    def __init__(self, message: str, unmapped=(), missing=(), unexpected=()):
        super().__init__(message)
        self.unmapped = list(unmapped)
        self.missing = list(missing)
        self.unexpected = list(unexpected)


class ShapeMismatchError(RustmlError, ValueError):
    """A tensor's shape differs from the one the config implies."""


class ArchitectureMismatchError(RustmlError, ValueError):
    """The config and the weights describe different architectures."""


class UnsupportedArchitectureError(RustmlError, ValueError):
    """A variant that is recognised but that rustml_nb cannot run."""


class InputError(RustmlError, ValueError):
    """Inference input of the wrong rank, shape, dtype or content."""


class RustmlWarning(UserWarning):
    """Something rustml_nb did on the user's behalf that they should know about (e.g. filling gaps)."""
