"""Format layer: safetensors bytes on disk -> ``dict[str, np.ndarray]`` under the checkpoint's own names.

Parsing goes through the ``safetensors`` package (``safetensors.deserialize``), which validates the
header, the offsets and the data length. NumPy has no bfloat16, so BF16 tensors are widened to float32
bit-exactly (a bfloat16 is the top 16 bits of a float32). F16 stays float16: widening it happens when
the model is loaded in its own dtype, which is exact too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import safetensors

from .errors import CheckpointError, MissingFileError, UnsupportedDtypeError

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"

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


def _decode_tensor(name: str, dtype: str, shape: list[int], data, path: Path) -> np.ndarray:
    if dtype == "BF16":
        itemsize = 2
    elif dtype in _NUMPY_DTYPES:
        itemsize = np.dtype(_NUMPY_DTYPES[dtype]).itemsize
    else:
        raise UnsupportedDtypeError(
            f"{path}: tensor {name!r} has dtype {dtype}; supported dtypes are {', '.join(SUPPORTED_DTYPES)}"
        )
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) != count * itemsize:
        raise CheckpointError(
            f"{path}: tensor {name!r} of shape {list(shape)} and dtype {dtype} needs "
            f"{count * itemsize} bytes, the file holds {len(data)}"
        )
    if dtype == "BF16":
        array = bf16_bits_to_float32(np.frombuffer(data, dtype="<u2"))
    else:
        raw = np.frombuffer(data, dtype=_NUMPY_DTYPES[dtype])
        array = raw.astype(raw.dtype.newbyteorder("="), copy=True)
    return array.reshape(shape)


def load_safetensors(path) -> dict[str, np.ndarray]:
    """Read one ``.safetensors`` file into ``{name: array}``; every error names the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MissingFileError(f"weight file not found: {path}") from None
    except IsADirectoryError:
        raise MissingFileError(f"expected a .safetensors file, got a directory: {path}") from None
    try:
        entries = safetensors.deserialize(data)
    except Exception as error:  # SafetensorError, and anything else the parser raises on garbage
        raise CheckpointError(f"{path}: not a valid safetensors file ({error})") from None
    tensors = {}
    for name, spec in entries:
        tensors[name] = _decode_tensor(name, spec["dtype"], spec["shape"], spec["data"], path)
    return tensors


def read_weight_map(index_path) -> dict[str, str]:
    """Parse ``model.safetensors.index.json`` -> ``{tensor name: shard file name}``."""
    index_path = Path(index_path)
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("weight_map is not an object of file names")
    except FileNotFoundError:
        raise MissingFileError(f"shard index not found: {index_path}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{index_path}: not a valid shard index ({error!r})") from None
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
