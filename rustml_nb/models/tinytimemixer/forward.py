"""TinyTimeMixer's compiled steps around the shared mixer layer (``kernels.mixer.mixer_layers``): the
embedding of a block of series (scaling, patching, the patcher Linear, the frequency token in front, the
positions), the decoder's input (adapter, raw-patch residual), the frequency token's own small MLP and the
decomposed model's robust trend; and forecast channel mixing over the head's forecasts (NumPy around the
shared kernels: it is small).
The arithmetic follows granite-tsfm's ``modeling_tinytimemixer.py`` (tsfm_public 0.3.11) step by step.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.fft

from ...jit import kernel
from ...kernels.gemm import matmul, matmul_bias
from ...kernels.mixer import MixerStack, make_workspace, mixer_layers
from ...kernels.rows import ACT_GELU, add_bias_activate, copy_rows, gate_rows, gelu_inplace_array
from ...kernels.series import scale_and_patchify
from ..layers import Linear, linear

# Values (rows x width) per block: 256 rows at granite's d_model 192 (32 series), so that a block, its hidden
# layer (twice as wide) and its output stay within a core's L2 (2048 rows of 192, as PatchTSMixer's narrow
# blocks, ran batch 64 10% slower; 512 and 256 run as fast on a thread alone), and a thread's share of a
# batch comes in steps small enough for the other thread to take over (base.STEPS_PER_SHARE).
BLOCK_VALUES = 256 * 192
INSTANCE_NORM_EPS = 1e-5  # torch's InstanceNorm1d default, which the multi-quantile head keeps


class Embedding(NamedTuple):
    patcher_weight: np.ndarray  # [patch_length, d_model] (multi_scale: the finest scale's)
    patcher_bias: np.ndarray  # [d_model]
    positional_encoding: np.ndarray  # [tokens or 0, d_model]


class CoarseScales(NamedTuple):
    """multi_scale's patcher Linears past the finest scale."""

    weight: np.ndarray  # [scales - 1, patch_length, d_model]
    bias: np.ndarray  # [scales - 1, d_model]


class Spectral(NamedTuple):
    """granite-tsfm's FFT tokens (r3 ``fft_length``): each selected frequency bin's row of ``embedding``
    (use_fft_embedding), else an MLP of the bin's index / bins; with get_one_freq_emb, the selected bins' rows
    side by side through ``projection`` to one token."""

    embedding: np.ndarray | None  # [bins, width]
    fc1: Linear | None  # Linear(1, width) -> ReLU -> fc2 Linear(width, width)
    fc2: Linear | None
    projection: Linear | None  # [k * width, d_model]


class DecoderInput(NamedTuple):
    adapter_weight: np.ndarray  # [d_model, decoder_d_model], or [0, 0] when the widths are equal
    adapter_bias: np.ndarray  # [decoder_d_model] or [0]
    raw_weight: np.ndarray  # [patch_length, decoder_d_model], or [0, 0] without the raw residual
    raw_bias: np.ndarray  # [decoder_d_model] or [0]


class Frequency(NamedTuple):
    embedding: np.ndarray  # [vocab, patch_length]
    fc1_weight: np.ndarray  # [patch_length, (patch_length + d_model) // 2]
    fc1_bias: np.ndarray
    fc2_weight: np.ndarray  # [(patch_length + d_model) // 2, d_model]
    fc2_bias: np.ndarray


@kernel
def embed_block(values, observed, default_scale, s0, s1, scaling, patch_stride, weights, prefix, lead, loc, scale,
                patch_input, block):
    """Series s0 .. s1 - 1 (series = batch x channels, channels fastest) of values / observed [batch, time,
    channels] -> loc, scale [batch, 1, channels], patch_input [series, patches, patch_length] and block
    [(s1 - s0) * tokens, d_model]. Each series' tokens end with its patches through the patcher Linear. The
    first ``lead`` end with the rows of its batch element in prefix [batch, rows, d_model] (register tokens,
    frequency token); the rest are zeros (FFT tokens in front, a multi-scale model's coarser scales after the
    lead: ``add_fft_tokens`` and ``add_coarse_scales`` add them); then the positions over every token."""
    channels = values.shape[2]
    num_patches = patch_input.shape[1]
    d_model = block.shape[1]
    tokens = block.shape[0] // (s1 - s0)
    first_patch = tokens - num_patches
    shared = prefix.shape[1]
    for series in range(s0, s1):
        b, c = series // channels, series % channels
        scale_and_patchify(values, observed, b, c, scaling, default_scale, patch_stride, loc, scale,
                           patch_input[series])
        rows = block[(series - s0) * tokens:(series - s0 + 1) * tokens]
        matmul(patch_input[series], weights.patcher_weight, rows[first_patch:])
        bias = weights.patcher_bias
        for p in range(first_patch, tokens):
            row = rows[p]
            for d in range(d_model):
                row[d] += bias[d]
        for p in range(lead - shared):
            for d in range(d_model):
                rows[p, d] = 0
        for p in range(lead, first_patch):
            for d in range(d_model):
                rows[p, d] = 0
        for p in range(shared):
            token = prefix[b, p]
            for d in range(d_model):
                rows[lead - shared + p, d] = token[d]
        positions = weights.positional_encoding
        if positions.shape[0]:
            for p in range(tokens):
                for d in range(d_model):
                    rows[p, d] += positions[p, d]


@kernel
def add_coarse_scales(patch_input, s0, coarse_weight, coarse_bias, lead, block):
    """granite-tsfm's MultiScaleFromPatchedSequence past its finest scale (the patcher's, in embed_block):
    scale i averages each series' patched steps (patch_input [series, patches, patch_length], from series s0)
    in runs of 2**i, keeps the last whole patches and projects them (coarse_weight [scales - 1, patch_length,
    d_model], coarse_bias [scales - 1, d_model]). Their rows sit coarsest first from row ``lead`` of each
    series' tokens in block [(s1 - s0) * tokens, d_model], where embed_block left zeros and the positions:
    each projection is added to them, as granite-tsfm adds the positions to it."""
    num_patches, patch_length = patch_input.shape[1], patch_input.shape[2]
    d_model = block.shape[1]
    steps = num_patches * patch_length
    count_of = np.empty(coarse_weight.shape[0], dtype=np.int64)
    coarse_rows = 0
    for i in range(coarse_weight.shape[0]):
        count_of[i] = steps // 2 ** (i + 1) // patch_length
        coarse_rows += count_of[i]
    tokens = lead + coarse_rows + num_patches
    series_count = block.shape[0] // tokens
    projected = np.empty((count_of[0], d_model), dtype=block.dtype)
    pooled = np.empty((count_of[0], patch_length), dtype=block.dtype)
    for s in range(series_count):
        flat = patch_input[s0 + s].reshape(steps)
        rows = block[s * tokens:(s + 1) * tokens]
        row = lead + coarse_rows
        for i in range(coarse_weight.shape[0]):  # finest first, so the rows fill from the back
            factor = 2 ** (i + 1)
            count = count_of[i]
            row -= count
            first = steps // factor - count * patch_length  # the pooled steps kept: the last whole patches
            for j in range(count):
                for k in range(patch_length):
                    start = (first + j * patch_length + k) * factor
                    total = flat[start]
                    for t in range(start + 1, start + factor):
                        total += flat[t]
                    pooled[j, k] = total / factor
            matmul(pooled[:count], coarse_weight[i], projected[:count])
            bias = coarse_bias[i]
            for p in range(count):
                for d in range(d_model):
                    rows[row + p, d] = (projected[p, d] + bias[d]) + rows[row + p, d]


def add_fft_tokens(values, loc, scale, s0, s1, config, weights: Spectral, block):
    """granite-tsfm's TinyTimeMixerAddFFTPatches for series s0 .. s1 - 1 (values [batch, time, channels], loc and
    scale [batch, 1, channels] as embed_block set them): the rfft of each series' scaled values, its k largest
    magnitudes' bins (largest first; the zero-frequency bin left out with fft_ignore_dc; of equal magnitudes
    the lower bin first, where torch's topk leaves the order open), embedded; added to the first
    ``config.fft_tokens`` rows of each series' tokens in block [(s1 - s0) * tokens, d_model] (zeros, or
    the positions)."""
    channels = values.shape[2]
    series = np.arange(s0, s1)
    batch_index, channel = series // channels, series % channels
    steps = values[batch_index, :, channel]  # [series, time]
    scaled = (steps - loc[batch_index, 0, channel][:, None]) / scale[batch_index, 0, channel][:, None]
    magnitude = np.abs(scipy.fft.rfft(scaled, axis=1))
    if config.fft_ignore_dc:
        magnitude[:, 0] = 0
    bins = np.argsort(-magnitude, axis=1, kind="stable")[:, :config.fft_selected]  # [series, k]
    if weights.embedding is not None:
        rows = weights.embedding[bins]  # [series, k, width]
    else:  # granite-tsfm divides in float32 (.float()); a float64 model does it in float64
        position = (bins.astype(np.float32) / np.float32(config.fft_bins)).astype(block.dtype)
        hidden = np.maximum(position[..., None] * weights.fc1.weight[0] + weights.fc1.bias, 0)
        rows = linear(hidden, weights.fc2.weight, weights.fc2.bias)
    if weights.projection is not None:
        rows = linear(rows.reshape(len(series), -1), weights.projection.weight, weights.projection.bias)[:, None]
    tokens = block.reshape(len(series), -1, block.shape[1])
    tokens[:, :rows.shape[1]] += rows.astype(block.dtype, copy=False)


@kernel
def decoder_input(encoded, patch_input, s0, tokens, weights, decoded, states, first_row):
    """encoded [rows, d_model] -> decoded [rows, decoder_d_model]: the adapter Linear (or a copy when the
    widths are equal), plus the raw-patch embedding of each series' patches (patch_input rows from series s0;
    a frequency token's row gets the embedding of zeros, its bias, as granite-tsfm pads it). states [S or 0,
    rows of the chunk, decoder_d_model] receive, from row first_row, the adapter's output and the sum with
    the raw embedding (each when the decoder has it), granite-tsfm's first decoder hidden states."""
    rows, width = decoded.shape
    state = 0
    if weights.adapter_weight.shape[0]:
        matmul_bias(encoded, weights.adapter_weight, weights.adapter_bias, decoded)
        if states.shape[0]:
            copy_rows(decoded, states[state, first_row:first_row + rows])
            state += 1
    else:
        for r in range(rows):
            for d in range(width):
                decoded[r, d] = encoded[r, d]
    if weights.raw_weight.shape[0]:
        num_patches = patch_input.shape[1]
        lead = tokens - num_patches
        raw = np.empty((num_patches, width), dtype=decoded.dtype)
        for s in range(rows // tokens):
            matmul(patch_input[s0 + s], weights.raw_weight, raw)
            out = decoded[s * tokens:(s + 1) * tokens]
            for d in range(width):
                for p in range(lead):
                    out[p, d] += weights.raw_bias[d]
            for p in range(num_patches):
                for d in range(width):
                    out[lead + p, d] += raw[p, d] + weights.raw_bias[d]
        if states.shape[0]:
            copy_rows(decoded, states[state, first_row:first_row + rows])


@kernel
def frequency_tokens(tokens, weights, out):
    """tokens [batch] (ints) -> out [batch, d_model]: embedding -> Linear -> GELU (exact) -> Linear."""
    embedded = np.empty((tokens.size, weights.embedding.shape[1]), dtype=out.dtype)
    for b in range(tokens.size):
        for i in range(embedded.shape[1]):
            embedded[b, i] = weights.embedding[tokens[b], i]
    middle = np.empty((tokens.size, weights.fc1_weight.shape[1]), dtype=out.dtype)
    matmul(embedded, weights.fc1_weight, middle)
    add_bias_activate(middle, weights.fc1_bias, ACT_GELU)
    matmul_bias(middle, weights.fc2_weight, weights.fc2_bias, out)


class ChannelMixing(NamedTuple):
    embedding_weight: np.ndarray  # [window, features], or [0, 0] without the mixer
    embedding_bias: np.ndarray  # [features] or [0]
    stack: MixerStack | None  # the mixer across channels (fcm_use_mixer)
    gate_weight: np.ndarray  # [channels x features, same], or [0, 0] without the gate
    gate_bias: np.ndarray
    mlp_weight: np.ndarray  # [channels x features, forecast channels]
    mlp_bias: np.ndarray  # [forecast channels]


def mix_forecast_channels(base, past, future, weights: ChannelMixing, config, switches, heads, gate_kind):
    """granite-tsfm's ForecastChannelHeadMixer: base [batch, horizon, forecast channels] (the head's forecasts,
    still in scaled units), past [batch, length, channels] and future [batch, horizon, channels] (exogenous
    channels read; unscaled, as granite-tsfm passes them) -> base plus the mixing's correction, same shape.

    Each forecast step's window of 2 * fcm_context_length + 1 steps of every channel (the forecast, then the
    exogenous channels; the past's last steps before the forecast, zeros after it), through the embedding and
    the mixer across channels when it has one, flattened, gated, then a Linear to the forecast channels."""
    batch, horizon, _ = base.shape
    context = config.fcm_context_length
    forecast, exogenous = config.output_channels, list(config.exogenous_channel_indices or [])
    values = base if not exogenous else np.concatenate([base, future[:, :horizon, exogenous]], axis=2)
    if context > 0:
        offset = config.fcm_prepend_past_offset or 0
        steps = past.shape[1]
        lead = (past[:, steps - offset - context:steps - offset][..., forecast + exogenous] if config.fcm_prepend_past
                else np.zeros((batch, context, values.shape[2]), base.dtype))
        extended = np.concatenate([lead, values, np.zeros((batch, context, values.shape[2]), base.dtype)], axis=1)
        windows = np.lib.stride_tricks.sliding_window_view(extended, 2 * context + 1, axis=1)  # [batch, horizon, V, window]
        if weights.stack is not None:
            channels, features = windows.shape[2], weights.embedding_weight.shape[1]
            rows = linear(windows.reshape(-1, windows.shape[3]), weights.embedding_weight, weights.embedding_bias)
            rows = np.ascontiguousarray(rows, dtype=base.dtype)  # [batch * horizon * V, features]
            work = make_workspace(rows.shape[0], features, config.expansion_factor, config.self_attn, base.dtype,
                                  config.gate_outputs)
            mixer_layers(rows, batch * horizon, 1, channels, weights.stack, switches, heads, gate_kind, work,
                         np.zeros((0, 0, 0), base.dtype), 0, 0)
            windows = rows
        features = np.array(windows, dtype=base.dtype, order="C").reshape(batch * horizon, -1)  # a copy: the gate writes it
    else:  # granite-tsfm 0.3.11 fails here without the gate (it names the gate's output only); the Linear runs
        features = np.array(values, dtype=base.dtype, order="C").reshape(batch * horizon, -1)
    if weights.gate_weight.shape[0]:
        logits = np.empty((features.shape[0], weights.gate_weight.shape[1]), base.dtype)
        gate_rows(gate_kind, features, weights.gate_weight, weights.gate_bias, logits)
    return linear(features, weights.mlp_weight, weights.mlp_bias).reshape(base.shape) + base


class QuantileHead(NamedTuple):
    """granite-tsfm's MultiQuantileHead (r3 ``multi_quantile_head``), around each series' point forecast."""

    smooth_weight: np.ndarray  # [kernel]: the Conv1d over the horizon
    smooth_bias: np.ndarray  # [1]
    norm_weight: np.ndarray  # [1]: the InstanceNorm's affine scale and shift
    norm_bias: np.ndarray  # [1]
    expand_weight: np.ndarray  # [hidden]: the pointwise Conv1d 1 -> hidden
    expand_bias: np.ndarray  # [hidden]
    condition: tuple  # mq_use_decoder_pool: (Linear,) for "pool", (token Linear, flat Linear) for "flatten"; else ()
    out: Linear  # the pointwise Conv1d (hidden, or 2 x hidden with "concat") -> quantiles, as [in, out]


def softplus(values):
    """torch's softplus (beta 1, threshold 20): log(1 + exp(x)), and x itself above 20."""
    return np.where(values > 20, values, np.log1p(np.exp(np.minimum(values, 20))))


def multi_quantile(point, decoded, config, weights: QuantileHead):
    """point [batch, horizon, channels] (scaled units), decoded [batch, channels, tokens, width] (the
    decoder's output, or the backbone's without a decoder) -> quantiles [batch, levels, horizon, channels],
    ascending. Per series, the forecast smoothed (Conv1d, zero padded), normalized over the horizon, expanded
    pointwise to ``mq_hidden`` features and through GELU (exact), plus (or beside) the decoder's summary, then
    pointwise to as many outputs as levels: the first shifts the median (mq_q50_type "median"), the others,
    through softplus (+ mq_eps), are the steps between neighbouring levels, summed outward from it."""
    batch, horizon, channels = point.shape
    dtype = point.dtype
    series = np.ascontiguousarray(point.transpose(0, 2, 1)).reshape(batch * channels, horizon)  # [series, T]
    half = weights.smooth_weight.size // 2
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(series, ((0, 0), (half, half))),
                                                       weights.smooth_weight.size, axis=1)  # [series, T, kernel]
    smoothed = linear(windows, weights.smooth_weight[:, None])[..., 0] + weights.smooth_bias[0]
    mean = smoothed.mean(axis=1, keepdims=True)
    variance = np.square(smoothed - mean).mean(axis=1, keepdims=True)
    normed = ((smoothed - mean) / np.sqrt(variance + dtype.type(INSTANCE_NORM_EPS)) * weights.norm_weight[0]
              + weights.norm_bias[0])
    hidden = np.ascontiguousarray(normed[:, None, :] * weights.expand_weight[:, None] + weights.expand_bias[:, None],
                                  dtype=dtype)  # [series, hidden, T]
    gelu_inplace_array(hidden.reshape(-1))
    if weights.condition:
        if config.mq_cond_path == "pool":
            summary = linear(decoded.mean(axis=2), weights.condition[0].weight, weights.condition[0].bias)
        else:
            tokens = linear(decoded, weights.condition[0].weight, weights.condition[0].bias)  # [batch, channels, P, md]
            summary = linear(tokens.reshape(batch, channels, -1), weights.condition[1].weight, weights.condition[1].bias)
        summary = summary.reshape(batch * channels, -1, 1).astype(dtype, copy=False)
        if config.mq_cond_mode == "add":
            hidden = hidden + summary
        else:
            hidden = np.concatenate([hidden, np.broadcast_to(summary, hidden.shape)], axis=1)
    outputs = linear(hidden.transpose(0, 2, 1), weights.out.weight, weights.out.bias).transpose(0, 2, 1)  # [series, levels, T]
    side = outputs.shape[1] // 2
    median = series + outputs[:, 0] if config.mq_q50_type.lower() == "median" else series
    steps = softplus(outputs[:, 1:]) + dtype.type(config.mq_eps)
    below = median[:, None] - np.cumsum(steps[:, :side], axis=1)  # nearest level first
    above = median[:, None] + np.cumsum(steps[:, side:], axis=1)
    levels = np.concatenate([below[:, ::-1], median[:, None], above], axis=1)  # [series, levels, T]
    return np.ascontiguousarray(levels.reshape(batch, channels, -1, horizon).transpose(0, 2, 3, 1), dtype=dtype)


# --------------------------------------------------------------------------------------------------
# The decomposed model's robust trend (granite-tsfm's robust_lowess_like)
# --------------------------------------------------------------------------------------------------
@kernel
def robust_trend(values, kernel, iterations, eps, first_series, last_series, trend):
    """granite-tsfm's ``robust_lowess_like`` trend of series first_series .. last_series - 1 (series = batch x
    channels, channels fastest) of values [batch, time, channels] into trend (same shape): a Gaussian local
    average (kernel [window], odd, over the series reflected at its ends: sum(kernel * w * x) / (sum(kernel *
    w) + eps)) with weights w of ones, then ``iterations`` times with Tukey's bisquare weights of the
    residuals over 6 median absolute deviations; each trend shifted to keep the series' mean. Medians of an
    even count take the lower middle value, as torch's do. Arithmetic in the dtype, as torch's."""
    steps, channels = values.shape[1], values.shape[2]
    half = kernel.size // 2
    dtype = values.dtype
    constants = np.array((0.0, 1.0, 6.0, eps), dtype=dtype)  # in the dtype, as torch's arithmetic
    zero, one, six, epsilon = constants[0], constants[1], constants[2], constants[3]
    means = np.empty(2, dtype=dtype)  # the series' mean and its trend's
    series_values = np.empty(steps, dtype=dtype)
    scratch = np.empty(steps, dtype=dtype)
    smooth = np.empty(steps, dtype=dtype)
    weights = np.empty(steps, dtype=dtype)
    deviations = np.empty(steps, dtype=dtype)
    numerator = np.empty(steps, dtype=dtype)
    denominator = np.empty(steps, dtype=dtype)
    padded_values = np.empty(steps + 2 * half, dtype=dtype)  # weighted values, reflected at both ends
    padded_weights = np.empty(steps + 2 * half, dtype=dtype)
    for series in range(first_series, last_series):
        b, c = series // channels, series % channels
        means[0] = zero
        for t in range(steps):
            series_values[t] = values[b, t, c]
            means[0] += series_values[t]
        means[0] /= steps
        for t in range(steps):
            weights[t] = one
        for iteration in range(iterations + 1):
            if iteration > 0:  # Tukey's bisquare of the residuals around their median, over 6 MADs
                for t in range(steps):
                    deviations[t] = series_values[t] - smooth[t]
                residual_median = lower_median(deviations, scratch)
                for t in range(steps):
                    deviations[t] = deviations[t] - residual_median
                    weights[t] = abs(deviations[t])
                spread = lower_median(weights, scratch) + epsilon
                for t in range(steps):
                    u = deviations[t] / (six * spread)
                    complement = one - min(max(u * u, zero), one)
                    weights[t] = complement * complement
            reflect_into(series_values, weights, half, padded_values, padded_weights)
            for t in range(steps):
                numerator[t] = zero
                denominator[t] = zero
            for j in range(kernel.size):  # the sum over the window, each term a vector loop over time
                weight = kernel[j]
                shifted_values, shifted_weights = padded_values[j:j + steps], padded_weights[j:j + steps]
                for t in range(steps):
                    numerator[t] += weight * shifted_values[t]
                    denominator[t] += weight * shifted_weights[t]
            means[1] = zero
            for t in range(steps):
                smooth[t] = numerator[t] / (denominator[t] + epsilon)
                means[1] += smooth[t]
            means[1] /= steps
            for t in range(steps):
                smooth[t] = smooth[t] - means[1] + means[0]
        for t in range(steps):
            trend[b, t, c] = smooth[t]


@kernel
def reflect_into(values, weights, half, padded_values, padded_weights):
    """padded_values = values * weights and padded_weights = weights, each [time + 2 * half] with ``half``
    steps reflected at both ends (torch's reflect padding: the end value itself not repeated)."""
    steps = values.size
    for t in range(steps):
        padded_values[half + t] = values[t] * weights[t]
        padded_weights[half + t] = weights[t]
    for i in range(1, half + 1):
        padded_values[half - i] = padded_values[half + i]
        padded_weights[half - i] = padded_weights[half + i]
        padded_values[half + steps - 1 + i] = padded_values[half + steps - 1 - i]
        padded_weights[half + steps - 1 + i] = padded_weights[half + steps - 1 - i]


@kernel
def lower_median(values, scratch):
    """The ((n - 1) // 2)-th smallest of values [n] (torch's median: the lower middle value of an even count),
    by quickselect on a copy in scratch [n]. (NumPy's partition compiled for ~4 s; this in a fraction.)"""
    count = values.size
    for i in range(count):
        scratch[i] = values[i]
    k = (count - 1) // 2
    low, high = 0, count - 1
    while low < high:
        # Hoare partition around the median of the first, middle and last values
        first, middle, last = scratch[low], scratch[(low + high) // 2], scratch[high]
        pivot = max(min(first, middle), min(max(first, middle), last))
        i, j = low, high
        while i <= j:
            while scratch[i] < pivot:
                i += 1
            while scratch[j] > pivot:
                j -= 1
            if i <= j:
                scratch[i], scratch[j] = scratch[j], scratch[i]
                i += 1
                j -= 1
        if k <= j:  # scratch[low .. j] <= pivot <= scratch[i .. high]; between them, the pivot's value
            high = j
        elif k >= i:
            low = i
        else:
            break
    return scratch[k]
