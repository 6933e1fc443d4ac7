"""Consumer-layer pieces every family uses: Linear and norm weights from a state dict, in the layout the
kernels read (Linear weights transposed from PyTorch's ``[out, in]`` to ``[in, out]``; BatchNorm with its
running statistics), as copies in the model's dtype."""

from __future__ import annotations

from typing import NamedTuple

import math
import re

import numpy as np

from ..errors import CheckpointError, ShapeMismatchError, WeightMappingError
from ..kernels.gemm import matmul, matmul_bias


def weight_array(value, dtype) -> np.ndarray:
    """A C-contiguous copy in ``dtype``: a copy always, so the model never keeps a view of a checkpoint's
    memory-mapped file."""
    return np.array(value, dtype=dtype, order="C", copy=True)


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """x [..., in] @ weight [in, out] (+ bias) in weight's dtype, through ``kernels.gemm.matmul``, so that each
    row's result does not depend on the other rows of x (NumPy's BLAS does not promise that)."""
    rows = np.ascontiguousarray(x, dtype=weight.dtype).reshape(-1, weight.shape[0])
    out = np.empty((rows.shape[0], weight.shape[1]), weight.dtype)
    if bias is None:
        matmul(rows, np.ascontiguousarray(weight), out)
    else:
        matmul_bias(rows, np.ascontiguousarray(weight), np.asarray(bias, dtype=weight.dtype), out)
    return out.reshape(*x.shape[:-1], weight.shape[1])


class Linear(NamedTuple):
    weight: np.ndarray  # [in, out]
    bias: np.ndarray  # [out]; zeros when the checkpoint has no bias (adding 0.0 is exact)

    @classmethod
    def from_state_dict(cls, state: dict, prefix: str, dtype) -> "Linear":
        weight = state[f"{prefix}.weight"]  # PyTorch layout: [out, in]
        bias = state.get(f"{prefix}.bias")
        if bias is None:
            bias = np.zeros(weight.shape[0])
        return cls(weight=weight_array(weight.T, dtype), bias=weight_array(bias, dtype))


class Norm(NamedTuple):
    """BatchNorm1d (eval: running statistics) or LayerNorm over d_model; LayerNorm leaves the stats at 0 and 1."""

    weight: np.ndarray  # [d_model]
    bias: np.ndarray  # [d_model]
    running_mean: np.ndarray  # [d_model]
    running_var: np.ndarray  # [d_model]

    @classmethod
    def from_state_dict(cls, state: dict, prefix: str, norm_type: str, dtype) -> "Norm":
        weight = state[f"{prefix}.weight"]
        if norm_type == "batchnorm":
            mean, var = state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"]
        else:
            mean, var = np.zeros_like(weight), np.ones_like(weight)
        return cls(*(weight_array(v, dtype) for v in (weight, state[f"{prefix}.bias"], mean, var)))


def stack_arrays(items: list[np.ndarray], empty_shape: tuple[int, ...], dtype) -> np.ndarray:
    return weight_array(np.stack(items) if items else np.zeros((0, *empty_shape)), dtype)


# BatchNorm's step counter: not needed for inference, so a checkpoint may lack it.
OPTIONAL_NAMES = re.compile(r".*\.num_batches_tracked\Z")


def validate_state(mapped: dict, unmapped: list[str], shapes: dict[str, tuple[int, ...]], what: str,
                   sources=None) -> None:
    """Every tensor ``shapes`` names (our name -> checkpoint layout) is in ``mapped`` with that shape and finite
    values, and nothing else is. ``what`` heads the messages (e.g. "PatchTST (prediction head)"); ``sources``
    (our name -> checkpoint key) lets them name the checkpoint's key."""
    sources = sources or {}
    missing = sorted(name for name in shapes if name not in mapped and not OPTIONAL_NAMES.match(name))
    unexpected = sorted(name for name in mapped if name not in shapes)
    if unmapped or missing or unexpected:
        parts = []
        if unmapped:
            parts.append(f"checkpoint keys no rule maps: {unmapped}")
        if missing:
            parts.append(f"tensors the config needs but the checkpoint lacks: {missing}")
        if unexpected:
            parts.append(f"tensors the checkpoint holds but the config does not use: {unexpected}")
        raise WeightMappingError(f"{what}: " + "; ".join(parts), unmapped, missing, unexpected)
    for name, shape in shapes.items():
        if name in mapped and tuple(mapped[name].shape) != shape:
            raise ShapeMismatchError(
                f"checkpoint tensor {sources.get(name, name)!r} (rustml_nb {name!r}): the config implies shape "
                f"{list(shape)}, the checkpoint holds {list(mapped[name].shape)}"
            )
    for name, array in mapped.items():
        if array.dtype.kind == "f":
            bad = array.size - int(np.count_nonzero(np.isfinite(array)))
            if bad:
                raise CheckpointError(f"checkpoint tensor {sources.get(name, name)!r} holds {bad} non-finite value(s) "
                                      f"(NaN or inf) among {array.size}: the checkpoint is corrupt or was saved from "
                                      "a diverged training run")


def sincos_positional_encoding(num_positions: int, d_model: int) -> np.ndarray:
    """transformers' fixed sin/cos table (centred, scaled to std 0.1), in float64."""
    position = np.arange(num_positions, dtype=np.float64)[:, None]
    div_term = np.exp(np.arange(0, d_model, 2, dtype=np.float64) * -(math.log(10000.0) / d_model))
    table = np.zeros((num_positions, d_model))
    table[:, 0::2] = np.sin(position * div_term)
    table[:, 1::2] = np.cos(position * div_term[: d_model // 2])
    table -= table.mean()
    return table / (table.std(ddof=1) * 10)


# Positional tables larger than this are not compared with the sin/cos table (a checkpoint's is ~50 x 128;
# a hostile header can declare any size, and its shape is refused when the model loads).
SINCOS_CHECK_LIMIT = 1 << 20


def positional_kind(positions) -> str | None:
    """"sincos" when a positional table is transformers' fixed sin/cos table, "random" (learned) otherwise,
    None when there is no 2-D table or it is too large to compare. A one-entry sin/cos table has no spread to
    normalize by (transformers' is NaN), so a finite one counts as learned."""
    if positions is None or positions.ndim != 2 or positions.size > SINCOS_CHECK_LIMIT:
        return None
    if positions.size > 1 and np.allclose(positions.astype(np.float64), sincos_positional_encoding(*positions.shape),
                                          rtol=1e-2, atol=1e-3):
        return "sincos"
    return "random"
