"""Format layer: safetensors bytes on disk -> ``dict[str, np.ndarray]`` under the checkpoint's own names.

The header is read and validated on its own before any tensor is touched: its length, its JSON (no
repeated names), every tensor's dtype, shape (at most 64 dimensions) and byte range, and that the ranges
tile the data exactly. Tensors are then read-only views into a memory map of the file, so reading a
checkpoint costs only the pages of the tensors a model goes on to use (the consumer copies those into its
own arrays). NumPy has no bfloat16, so BF16 tensors are widened to float32 bit-exactly as they are read (a
bfloat16 is the top 16 bits of a float32). F16 stays float16: widening it happens when the model is
loaded in its own dtype, which is exact too.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import CheckpointError, MissingFileError, UnsupportedDtypeError
from ..files import INDEX_MAX_BYTES, open_regular, parse_json, read_json

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
HEADER_MAX_BYTES = 100 << 20  # the safetensors library's own limit
MAX_DIMENSIONS = 64

# safetensors dtype tag -> little-endian NumPy dtype. BF16 is handled on its own.
_NUMPY_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}
SUPPORTED_DTYPES = tuple(_NUMPY_DTYPES) + ("BF16",)


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen raw bfloat16 bit patterns (uint16) to float32, bit-exactly."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def _itemsize(name: str, dtype, path) -> int:
    if dtype == "BF16":
        return 2
    if dtype in _NUMPY_DTYPES:
        return np.dtype(_NUMPY_DTYPES[dtype]).itemsize
    raise UnsupportedDtypeError(f"{path}: tensor {name!r} has dtype {dtype!r}; supported dtypes are "
                                f"{', '.join(SUPPORTED_DTYPES)}")


def read_header(descriptor: int, path) -> tuple[int, dict[str, tuple[str, tuple[int, ...], int, int]]]:
    """(where the data starts, {name: (dtype, shape, begin, end)}) of an open safetensors file, validated."""
    size = os.fstat(descriptor).st_size
    prefix = os.pread(descriptor, 8, 0)
    if len(prefix) < 8:
        raise CheckpointError(f"{path}: not a safetensors file ({size} bytes, shorter than its 8-byte header length)")
    header_length = struct.unpack("<Q", prefix)[0]
    if header_length > min(HEADER_MAX_BYTES, size - 8):
        raise CheckpointError(f"{path}: not a valid safetensors file (its header claims {header_length:,} bytes; "
                              f"the file holds {size - 8:,} after the length)")
    header = parse_json(os.pread(descriptor, header_length, 8), f"{path} (safetensors header)")
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is not a JSON object")
    data_start, data_size = 8 + header_length, size - 8 - header_length
    entries = {}
    for name, spec in header.items():
        if name == "__metadata__":
            if not isinstance(spec, dict) or not all(isinstance(v, str) for v in spec.values()):
                raise CheckpointError(f"{path}: __metadata__ must map names to strings")
            continue
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
            raise CheckpointError(f"{path}: tensor {name!r}: expected dtype, shape and data_offsets, got {spec!r}"[:300])
        dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
        itemsize = _itemsize(name, dtype, path)
        if (not isinstance(shape, list) or len(shape) > MAX_DIMENSIONS
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
            raise CheckpointError(f"{path}: tensor {name!r}: shape must be a list of at most {MAX_DIMENSIONS} "
                                  f"non-negative integers, got {shape!r}"[:300])
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_size):
            raise CheckpointError(f"{path}: tensor {name!r}: data_offsets {offsets!r} lie outside the "
                                  f"{data_size:,} bytes of data"[:300])
        count = 1
        for n in shape:
            count *= n
        if count * itemsize != offsets[1] - offsets[0]:
            raise CheckpointError(f"{path}: tensor {name!r} of shape {shape} and dtype {dtype} needs "
                                  f"{count * itemsize:,} bytes, its data_offsets span {offsets[1] - offsets[0]:,}")
        entries[name] = (dtype, tuple(shape), offsets[0], offsets[1])
    position = 0
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda item: (item[1][2], item[1][3])):
        if begin != position:
            raise CheckpointError(f"{path}: tensor {name!r} starts at byte {begin:,} of the data, expected "
                                  f"{position:,}: tensors must tile the data without gaps or overlaps")
        position = end
    if position != data_size:
        raise CheckpointError(f"{path}: the tensors cover {position:,} bytes of data, the file holds {data_size:,}")
    return data_start, entries


def load_safetensors(path) -> dict[str, np.ndarray]:
    """One ``.safetensors`` file as ``{name: array}``: read-only views into a memory map of the file (BF16
    widened into new float32 arrays). Every error names the file."""
    path = Path(path)
    descriptor = open_regular(path, "weight file")
    try:
        data_start, entries = read_header(descriptor, path)
        size = os.fstat(descriptor).st_size
        mapped = mmap.mmap(descriptor, size, access=mmap.ACCESS_READ) if size else b""
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read it ({error})") from None
    finally:
        os.close(descriptor)  # the map keeps the file open as long as an array uses it
    tensors = {}
    for name, (dtype, shape, begin, end) in entries.items():
        raw_dtype = "<u2" if dtype == "BF16" else _NUMPY_DTYPES[dtype]
        array = np.frombuffer(mapped, dtype=raw_dtype, count=(end - begin) // np.dtype(raw_dtype).itemsize,
                              offset=data_start + begin).reshape(shape)
        tensors[name] = bf16_bits_to_float32(array) if dtype == "BF16" else array
    return tensors


def read_weight_map(index_path) -> dict[str, str]:
    """Parse ``model.safetensors.index.json`` -> ``{tensor name: shard file name}``. Every shard must be a
    plain file name (no folder, no ``..``, not absolute): a checkpoint is read only inside its own folder."""
    index_path = Path(index_path)
    index = read_json(index_path, "shard index", INDEX_MAX_BYTES)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index_path}: not a valid shard index (expected an object whose weight_map maps "
                              "tensor names to file names)")
    for name, shard in weight_map.items():
        plain = PurePosixPath(shard)
        if (not shard or "\\" in shard or "\0" in shard or plain.name != shard or shard in (".", "..")
                or not shard.endswith(".safetensors")):
            raise CheckpointError(f"{index_path}: tensor {name!r} is placed in {shard!r}, which is not a "
                                  ".safetensors file name inside the checkpoint folder; refusing to open it")
    return weight_map


def read_shard_index(index_path) -> dict[str, Path]:
    """``{tensor name: shard path}`` from a shard index; every shard must exist beside it."""
    index_path = Path(index_path)
    shard_of = {}
    for name, shard in read_weight_map(index_path).items():
        shard_path = index_path.parent / shard
        if not shard_path.is_file():
            raise MissingFileError(f"{index_path} names shard {shard!r} for tensor {name!r}, but {shard_path} does not exist")
        shard_of[name] = shard_path
    return shard_of


def load_sharded_safetensors(index_path) -> dict[str, np.ndarray]:
    """Read every shard an index names; the shards must hold exactly the tensors the index lists."""
    index_path = Path(index_path)
    shard_of = read_shard_index(index_path)
    tensors: dict[str, np.ndarray] = {}
    for shard_path in sorted(set(shard_of.values())):
        for name, array in load_safetensors(shard_path).items():
            if name in tensors:
                raise CheckpointError(f"{shard_path}: tensor {name!r} is also stored in another shard")
            if shard_of.get(name) != shard_path:
                raise CheckpointError(f"{shard_path}: holds tensor {name!r}, which {index_path} does not place there")
            tensors[name] = array
    missing = sorted(set(shard_of) - set(tensors))
    if missing:
        raise CheckpointError(f"{index_path}: tensors listed but absent from their shards: {missing}")
    return tensors


def load_weight_files(weight_files) -> dict[str, np.ndarray]:
    """Load a list of weight files: one shard index, or one or more ``.safetensors`` files."""
    tensors: dict[str, np.ndarray] = {}
    for path in map(Path, weight_files):
        loaded = load_sharded_safetensors(path) if path.name.endswith(".index.json") else load_safetensors(path)
        for name, array in loaded.items():
            if name in tensors:
                raise CheckpointError(f"{path}: tensor {name!r} appears in more than one weight file")
            tensors[name] = array
    return tensors
