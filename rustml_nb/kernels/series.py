"""Scaling series and cutting them into patches, as transformers' PatchTST / PatchTSMixer scalers and
patchify do."""

from __future__ import annotations

import math

from ..jit import kernel

SCALING_NONE, SCALING_MEAN, SCALING_STD = 0, 1, 2
# A config's ``scaler`` ("none", "mean", "std") -> the code the kernels take.
SCALINGS = {"none": SCALING_NONE, "mean": SCALING_MEAN, "std": SCALING_STD}
STD_MINIMUM_SCALE = 1e-5  # the std scaler: sqrt(variance + 1e-5)
MEAN_MINIMUM_SCALE = 1e-10  # the mean scaler: clamp(scale, min=1e-10)


@kernel
def add_mean_scaler_totals(values, observed, totals):
    """totals[0, c] += sum of |observed values| of channel c, totals[1, c] += their count, series by series
    in batch order: what transformers' mean scaler gives a series with no observed value (the batch's
    scale for its channel). values, observed: [batch, time, channels]; totals: [2, channels] float64."""
    batch, time, channels = values.shape
    for b in range(batch):
        for c in range(channels):
            abs_sum = 0.0
            count = 0.0
            for t in range(time):
                abs_sum += abs(values[b, t, c] * observed[b, t, c])
                count += observed[b, t, c]
            totals[0, c] += abs_sum
            totals[1, c] += count


@kernel
def scale_and_patchify(values, observed, b, c, scaling, default_scale, patch_stride, loc, scale, patches):
    """Series (b, c) of values, observed [batch, time, channels] (observed 1.0 / 0.0 in the dtype) -> its
    loc[b, 0, c], scale[b, 0, c] and scaled patches [num_patches, patch_length].

    Scaling as transformers' PatchTSTStdScaler / PatchTSTMeanScaler / no scaler, sums in float64 whatever
    the dtype, the rest in the dtype; the mean scaler gives a series with no observed value
    ``default_scale[c]``. Leading steps that do not fill a whole stride are dropped, as in PatchTSTPatchify.
    """
    time = values.shape[1]
    num_patches, patch_length = patches.shape
    start = time - (patch_length + patch_stride * (num_patches - 1))
    count = 0.0
    total = 0.0
    abs_sum = 0.0
    for t in range(time):
        count += observed[b, t, c]
        total += values[b, t, c] * observed[b, t, c]
        abs_sum += abs(values[b, t, c] * observed[b, t, c])
    loc[b, 0, c] = 0.0
    scale[b, 0, c] = 1.0
    if scaling == SCALING_STD:
        denominator = max(count, 1.0)
        loc[b, 0, c] = total / denominator  # stored in the dtype: later steps see the rounded loc
        squares = 0.0
        for t in range(time):
            deviation = (values[b, t, c] - loc[b, 0, c]) * observed[b, t, c]
            squares += deviation * deviation
        scale[b, 0, c] = math.sqrt(squares / denominator + STD_MINIMUM_SCALE)
    elif scaling == SCALING_MEAN:
        mean_abs = abs_sum / max(count, 1.0) if count > 0 else default_scale[c]
        scale[b, 0, c] = max(mean_abs, MEAN_MINIMUM_SCALE)
    for p in range(num_patches):
        for i in range(patch_length):
            value = values[b, start + p * patch_stride + i, c]
            if scaling == SCALING_STD:
                patches[p, i] = (value - loc[b, 0, c]) / scale[b, 0, c]
            elif scaling == SCALING_MEAN:
                patches[p, i] = value / scale[b, 0, c]
            else:
                patches[p, i] = value


@kernel
def mask_patches(patch_mask, b, c, mask_value, source, target):
    """Pretraining's given mask: target [num_patches, patch_length] = series (b, c)'s source patches, those
    patch_mask [batch, channels, num_patches] marks set to mask_value. Nothing when patch_mask is empty (the
    caller then reads source itself)."""
    if patch_mask.shape[0]:
        for p in range(source.shape[0]):
            for i in range(source.shape[1]):
                target[p, i] = mask_value if patch_mask[b, c, p] else source[p, i]
