"""Inference inputs: ``past_values`` and ``past_observed_mask`` checked once, converted chunk by chunk.

Every model takes ``past_values`` as ``[batch, time, channels]`` (or one series ``[time, channels]``) and
an optional ``past_observed_mask`` of the same shape. ``check_series`` validates shapes and dtypes without
copying an array; ``chunk_in_dtype`` converts a slice of the batch to the model's dtype, so a forward pass
never holds more than a chunk's worth of converted input. Missing values (mask 0, or NaN / ±inf when no
mask is given) become 0 with mask 0, as transformers expects of missing entries.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError


def as_array(name: str, value) -> np.ndarray:
    """``np.asarray`` whose failures (ragged nested lists, objects) are ``InputError``s."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:
        raise InputError(f"{name} must be a rectangular array of numbers: {error}") from None
    if array.dtype.kind == "O":
        raise InputError(f"{name} must be a rectangular array of numbers, got objects ({type(value).__name__} "
                         "of ragged or non-numeric items)")
    return array


def check_series(past_values, past_observed_mask, context_length: int, channels: int | None):
    """(values [batch, time, channels], mask or None, single): checked, not copied. ``single`` says the
    input was one series ``[time, channels]``; ``channels`` None takes any number of channels."""
    values = as_array("past_values", past_values)
    if values.dtype.kind not in "fiu":
        raise InputError(f"past_values must hold real numbers, got dtype {values.dtype}")
    if values.dtype.kind != "f":
        raise InputError(f"past_values must be a float array, got dtype {values.dtype}; "
                         "convert with values.astype(np.float32)")
    if values.ndim not in (2, 3):
        raise InputError(f"past_values must be [batch, context_length, channels] or [context_length, channels], "
                         f"got {values.ndim}-D shape {values.shape}")
    single = values.ndim == 2
    if single:
        values = values[None]
    expected = (context_length, values.shape[2] if channels is None else channels)
    if values.shape[1:] != expected or expected[1] == 0:
        wanted = "channels (any number)" if channels is None else "num_input_channels"
        raise InputError(f"past_values: expected [batch, {expected[0]}, {expected[1] or 'at least 1'}] (context_length, "
                         f"{wanted}), got {list(values.shape if not single else values.shape[1:])}")
    if values.shape[0] == 0:
        raise InputError("past_values: the batch is empty")
    if past_observed_mask is None:
        return values, None, single
    mask = as_array("past_observed_mask", past_observed_mask)
    if single and mask.ndim == 2:
        mask = mask[None]
    if mask.shape != values.shape:
        raise InputError(f"past_observed_mask: expected shape {list(values.shape)} like past_values, "
                         f"got {list(np.shape(past_observed_mask))}")
    if mask.dtype.kind not in "biuf":
        raise InputError(f"past_observed_mask must be bool or 0/1 numbers, got dtype {mask.dtype}")
    if mask.dtype.kind != "b" and not np.isin(mask, (0, 1)).all():
        raise InputError("past_observed_mask must hold only 0 and 1 (or booleans)")
    return values, mask, single


def _where(flags: np.ndarray, first: int) -> tuple[int, ...]:
    index = tuple(int(i) for i in np.argwhere(flags)[0])
    return (index[0] + first,) + index[1:]


def chunk_in_dtype(values: np.ndarray, mask: np.ndarray | None, dtype, first: int = 0):
    """(values, observed) of a chunk of the batch starting at batch index ``first``, both contiguous in
    ``dtype`` (observed as 1.0 / 0.0). An observed value that is not finite, or that is finite but beyond
    the dtype's range (1e39 in float32), is an ``InputError`` naming its index in the whole batch."""
    dtype = np.dtype(dtype)
    finite = np.isfinite(values)
    if mask is None:
        observed = finite
    else:
        observed = mask.astype(bool)
        bad = observed & ~finite
        if bad.any():
            where = _where(bad, first)
            raise InputError(f"past_values[{', '.join(map(str, where))}] is {values[(where[0] - first,) + where[1:]]} "
                             "but past_observed_mask marks it observed; mark it missing (0) or give a finite value")
    converted = np.where(finite, values, 0)  # a new array in the input's dtype
    if converted.dtype != dtype:
        with np.errstate(over="ignore", invalid="ignore"):
            converted = converted.astype(dtype)
    if values.dtype.itemsize > dtype.itemsize:  # only a narrowing conversion can overflow
        overflowed = ~np.isfinite(converted)
        if overflowed.any():
            beyond = overflowed & observed
            if beyond.any():
                where = _where(beyond, first)
                value = values[(where[0] - first,) + where[1:]]
                raise InputError(f"past_values[{', '.join(map(str, where))}] is {value:g}, beyond the range of the "
                                 f"model's {dtype.name} (largest {np.finfo(dtype).max:g}); rescale the series or "
                                 "load the model with dtype='float64'")
            converted[overflowed] = 0  # a missing value too large for the dtype is missing all the same
    return np.ascontiguousarray(converted), np.ascontiguousarray(observed, dtype=dtype)  # no copy if C already
