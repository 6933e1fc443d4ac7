"""Opening checkpoint files safely: regular files only, bounded reads, every failure a typed error.

A FIFO named config.json would block forever, a symlink to /dev/zero would be read until memory runs out,
a folder or an unreadable file would raise bare OSErrors: ``open_regular`` refuses all of them, checking
the file it actually opened (so a file swapped in after a check is caught too). ``read_json`` reads at most
a given number of bytes and turns JSON that nests too deeply or repeats a key into a typed error.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from .errors import CheckpointError, MissingFileError, UnreadableFileError

CONFIG_MAX_BYTES = 1 << 20  # a PatchTST config.json is ~1.2 KB
INDEX_MAX_BYTES = 64 << 20  # a shard index lists every tensor name: large models run to a few MB
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


def open_regular(path, what: str) -> int:
    """A read-only file descriptor of ``path``, which must be a regular file (symlinks to one are fine)."""
    path = Path(path)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: opening a FIFO must not wait
    except FileNotFoundError:
        raise MissingFileError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise MissingFileError(f"expected {what} at {path}, found a folder") from None
    except PermissionError:
        raise UnreadableFileError(f"cannot read {what} {path}: permission denied") from None
    except OSError as error:
        raise UnreadableFileError(f"cannot open {what} {path}: {error.strerror or error}") from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        if stat.S_ISDIR(mode):
            raise MissingFileError(f"expected {what} at {path}, found a folder")
        raise CheckpointError(f"{path} is {kind}, not a regular file: refusing to read it as {what}")
    os.set_blocking(descriptor, True)
    return descriptor


def read_bounded(path, what: str, limit: int, error=CheckpointError) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (a larger one is an ``error``)."""
    descriptor = open_regular(path, what)
    try:
        with os.fdopen(descriptor, "rb") as file:
            data = file.read(limit + 1)
    except OSError as failure:
        raise UnreadableFileError(f"cannot read {what} {path}: {failure.strerror or failure}") from None
    if len(data) > limit:
        raise error(f"{path}: {what} is larger than {limit:,} bytes; refusing to read it")
    return data


def _no_duplicate_keys(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} appears twice")
        seen[key] = value
    return seen


def parse_json(data: bytes | str, source: str, error=CheckpointError):
    """JSON with every failure (syntax, a repeated key, nesting too deep) an ``error`` naming ``source``."""
    try:
        return json.loads(data, object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise error(f"{source}: JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as failure:
        raise error(f"{source}: not valid JSON ({failure})") from None


def read_json(path, what: str, limit: int, error=CheckpointError):
    return parse_json(read_bounded(path, what, limit, error), str(path), error)
