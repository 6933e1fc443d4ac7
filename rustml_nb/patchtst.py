"""PatchTST model classes, named as transformers names them.

Each class validates its inputs in Python, runs the compiled kernels over the batch (``_forward``), and
wraps the arrays in an output object whose field names and shapes are transformers'.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import numpy as np

from . import kernels
from .config import DISTRIBUTION_PARAMETERS, PatchTSTConfig
from .detection import (ARCHITECTURE_HEADS, ArchitectureCheck, check_patchtst_compatibility, expected_shapes,
                        head_of_config)
from .errors import ArchitectureMismatchError, ConfigError, InputError, UnsupportedArchitectureError
from .inputs import as_array, check_series, chunk_in_dtype
from .layers import PatchTSTWeights, load_patchtst_weights
from .mapping import map_patchtst_weights
from .threads import get_num_threads, release_scratch, run_tasks, scratch, single_threaded_blas

DTYPES = {"float32": np.float32, "float64": np.float64}


# --------------------------------------------------------------------------------------------------
# Outputs: transformers' field names and shapes, NumPy arrays
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class PatchTSTModelOutput:
    last_hidden_state: np.ndarray  # [batch, channels, patches (+1 with cls token), d_model]
    loc: np.ndarray  # [batch, 1, channels]
    scale: np.ndarray  # [batch, 1, channels]
    patch_input: np.ndarray  # [batch, channels, patches, patch_length]
    mask: np.ndarray | None = None  # [batch, channels, patches], the patch mask given, if any
    hidden_states: tuple[np.ndarray, ...] | None = None  # the input of each encoder layer, when asked


@dataclasses.dataclass
class PatchTSTForPredictionOutput:
    prediction_outputs: np.ndarray | tuple[np.ndarray, ...]  # [batch, horizon, channels], or one per distribution parameter
    loc: np.ndarray
    scale: np.ndarray
    hidden_states: tuple[np.ndarray, ...] | None = None


@dataclasses.dataclass
class PatchTSTForPretrainingOutput:
    prediction_output: np.ndarray  # [batch, channels, patches, patch_length]
    hidden_states: tuple[np.ndarray, ...] | None = None


@dataclasses.dataclass
class PatchTSTForClassificationOutput:
    prediction_logits: np.ndarray  # [batch, num_targets]
    hidden_states: tuple[np.ndarray, ...] | None = None


@dataclasses.dataclass
class PatchTSTForRegressionOutput:
    regression_outputs: np.ndarray | tuple[np.ndarray, ...]  # [batch, num_targets] (a distribution head: a tuple)
    hidden_states: tuple[np.ndarray, ...] | None = None


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------
def _switches(config: PatchTSTConfig, head: str, dtype) -> kernels.Switches:
    distribution = 0
    if head in ("prediction", "regression") and config.has_distribution_head:
        distribution = 1 + list(DISTRIBUTION_PARAMETERS).index(config.distribution_output)
    low, high = config.output_range if (config.output_range is not None and head == "regression") else (0.0, 1.0)
    return kernels.Switches(
        scaling={"none": kernels.SCALING_NONE, "mean": kernels.SCALING_MEAN, "std": kernels.SCALING_STD}[config.scaler],
        norm_type=kernels.NORM_BATCH if config.norm_type == "batchnorm" else kernels.NORM_LAYER,
        pre_norm=bool(config.pre_norm),
        channel_attention=bool(config.channel_attention),
        activation=kernels.ACT_GELU if config.activation_function == "gelu" else kernels.ACT_RELU,
        use_cls_token=bool(config.use_cls_token),
        pooling={None: kernels.POOL_NONE, "mean": kernels.POOL_MEAN, "max": kernels.POOL_MAX}[config.pooling_type],
        distribution=distribution,
        num_heads=config.num_attention_heads,
        norm_eps=float(config.norm_eps),
        has_output_range=config.output_range is not None and head == "regression" and distribution == 0,
        output_low=float(low),
        output_high=float(high),
        dtype_eps=float(np.finfo(dtype).eps),
        patch_stride=config.patch_stride,
        mask_value=float(config.mask_value),
        # The head reads only token means, and after the last layer's activation only affine steps remain
        # (its second Linear, the residual, a BatchNorm or no norm): see kernels.encode_units.
        pool_last_feed_forward=(head in ("prediction", "classification", "regression")
                                and config.pooling_type == "mean" and not config.use_cls_token
                                and config.num_hidden_layers > 0
                                and (bool(config.pre_norm) or config.norm_type == "batchnorm")),
    )


def _check_runnable(config: PatchTSTConfig, head: str, check: ArchitectureCheck) -> None:
    if check.kind == "ChannelDependent":
        raise UnsupportedArchitectureError(
            f"the embedding takes {check.got} inputs = patch_length x num_input_channels "
            f"({config.patch_length} x {config.num_input_channels}): a channel-dependent PatchTST. rustml_nb detects "
            "it but runs only channel-independent checkpoints, which is every checkpoint transformers can write"
        )
    if check.kind == "Unknown":
        raise ArchitectureMismatchError(
            f"embedding input width: config implies {check.expected_ci} (patch_length) or {check.expected_cd} "
            f"(patch_length x num_input_channels), the weights have {check.got}"
        )
    if check.mismatches:
        details = "; ".join(f"{field}: config says {want!r}, weights say {have!r}" for field, want, have in check.mismatches)
        raise ArchitectureMismatchError(f"config.json and the weights disagree: {details}")
    if head in ("classification", "regression") and config.pooling_type is None and not config.use_cls_token:
        raise ConfigError(
            f"a {head} head needs pooling_type 'mean' or 'max' or a cls token; got pooling_type None "
            "(transformers raises on it at forward time)"
        )


# A forward pass runs the batch in chunks of about this many rows (series x tokens), so the memory it needs
# beyond its input and outputs stays bounded whatever the batch size (16 MiB of rows at d_model 128 in
# float32); a chunk is still many blocks of kernels.BLOCK_ROWS for every thread.
CHUNK_ROWS = 32768


class _Arrays(NamedTuple):
    """What one forward pass computes; fields a class does not need are None."""

    last_hidden_state: np.ndarray | None  # [batch, channels, tokens, d_model]
    loc: np.ndarray  # [batch, 1, channels]
    scale: np.ndarray  # [batch, 1, channels]
    patch_input: np.ndarray | None  # [batch, channels, patches, patch_length]
    head: np.ndarray | None  # see _PatchTSTBase._head_output
    hidden_states: np.ndarray | None  # [layers, batch, channels, tokens, d_model]


class _PatchTSTBase:
    """Shared by the five classes: loading, input checks and the forward pass.

    A model holds its config and weights and nothing that a call changes: one object can be called from any
    number of threads at once (see ``rustml_nb.threads``)."""

    head: ClassVar[str]

    def __init__(self, config: PatchTSTConfig, weights: PatchTSTWeights, dtype="float32",
                 check: ArchitectureCheck | None = None):
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
        self.config = config
        self.weights = weights
        self.dtype = np.dtype(DTYPES[dtype])
        self.architecture = check
        self._switches = _switches(config, self.head, self.dtype)
        self._heads_kind = kernels.heads_kind(config.head_dim)

    @classmethod
    def from_hub_weights(cls, config: PatchTSTConfig, hf_weights: dict, dtype: str = "float32"):
        """Map, detect, transpose and load a transformers state dict (``{name: array}``)."""
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
        named = head_of_config(config)
        if named is not None and named != cls.head:
            raise ArchitectureMismatchError(
                f"{cls.__name__} loads a {cls.head} checkpoint; config.json's architectures say {config.architectures}"
            )
        hinted = dataclasses.replace(config, architectures=[_CLASS_OF_HEAD[cls.head]])
        mapping = map_patchtst_weights(hf_weights)
        check = check_patchtst_compatibility(mapping.mapped, hinted)
        _check_runnable(config, cls.head, check)
        weights = load_patchtst_weights(mapping.mapped, config, cls.head, DTYPES[dtype], mapping.unmapped,
                                        mapping.sources)
        return cls(config, weights, dtype, check)

    @classmethod
    def from_pretrained(cls, repo_id_or_path, revision=None, dtype: str = "float32", cache_dir=None, token=None,
                        local_files_only: bool = False):
        """Load a checkpoint folder, or a Hub repo id through ``HubApi`` (see ``rustml_nb.from_pretrained``)."""
        from .hub import load_bundle
        bundle = load_bundle(repo_id_or_path, revision, cache_dir, token, local_files_only)
        return cls.from_hub_weights(bundle.config, bundle.load_tensors(), dtype)

    def release_workspace(self) -> None:
        """Free the scratch buffers kept for models of this shape and dtype (a few MB for each of
        ``rustml_nb.get_num_threads()`` compute slots). The next call makes them again, once; calls under way
        keep theirs."""
        release_scratch(self._scratch_key())

    # --- the forward pass -----------------------------------------------------------------------
    def _scratch_key(self):
        config = self.config
        tokens = config.num_patches + int(config.use_cls_token)
        unit_rows = tokens * (config.num_input_channels if config.channel_attention else 1)
        return (self.dtype.str, max(kernels.BLOCK_ROWS, unit_rows), config.d_model, config.ffn_dim)

    def _patch_mask(self, mask, batch):
        if mask is None:
            return None
        mask = as_array("mask", mask)
        expected = (batch, self.config.num_input_channels, self.config.num_patches)
        if mask.shape != expected:
            raise InputError(f"mask: expected shape {list(expected)} (batch, channels, patches), got {list(mask.shape)}")
        if mask.dtype.kind not in "biu":
            raise InputError(f"mask must be bool or 0/1 integers, got dtype {mask.dtype}")
        return mask.astype(bool)

    def _forward(self, past_values, past_observed_mask, mask=None, output_hidden_states=False):
        """Validate, then run the batch chunk by chunk: scale and patch, encode on every thread, apply the head."""
        config, switches, dtype = self.config, self._switches, self.dtype
        raw, raw_mask, single = check_series(past_values, past_observed_mask, config.context_length,
                                             config.num_input_channels)
        batch, channels = raw.shape[0], config.num_input_channels
        patch_mask = self._patch_mask(mask, batch)
        num_patches, d_model = config.num_patches, config.d_model
        tokens = num_patches + int(config.use_cls_token)
        num_layers = config.num_hidden_layers if output_hidden_states else 0
        pools = (self.head in ("prediction", "classification", "regression")
                 and (config.pooling_type is not None or config.use_cls_token))
        chunk = max(1, CHUNK_ROWS // (channels * tokens))

        def chunks():
            return ((first, min(first + chunk, batch)) for first in range(0, batch, chunk))

        try:
            out = _Arrays(
                last_hidden_state=np.empty((batch, channels, tokens, d_model), dtype) if self.head == "none" else None,
                loc=np.empty((batch, 1, channels), dtype), scale=np.empty((batch, 1, channels), dtype),
                patch_input=np.empty((batch, channels, num_patches, config.patch_length), dtype)
                if self.head == "none" else None,
                head=self._head_output(batch, dtype),
                hidden_states=np.empty((num_layers, batch, channels, tokens, d_model), dtype)
                if output_hidden_states else None)
        except MemoryError:
            raise InputError(f"the outputs of a batch of {batch} series do not fit in memory; run it in smaller "
                             "batches") from None

        default_scale = np.ones(channels, dtype=dtype)  # the mean scaler's for series with no observed value
        if switches.scaling == kernels.SCALING_MEAN:
            totals = np.zeros((2, channels))
            for first, last in chunks():
                kernels.add_mean_scaler_totals(*chunk_in_dtype(raw[first:last], _part(raw_mask, first, last), dtype,
                                                               first), totals)
            default_scale = (totals[0] / np.maximum(totals[1], 1.0)).astype(dtype)
        with single_threaded_blas():
            for first, last in chunks():
                values, observed = chunk_in_dtype(raw[first:last], _part(raw_mask, first, last), dtype, first)
                series = (last - first) * channels
                patch_input = (out.patch_input[first:last] if out.patch_input is not None else
                               np.empty((last - first, channels, num_patches, config.patch_length), dtype))
                patch_input = patch_input.reshape(series, num_patches, config.patch_length)
                patches = patch_input if patch_mask is None else np.empty_like(patch_input)
                stream = (out.last_hidden_state[first:last].reshape(series * tokens, d_model)
                          if out.last_hidden_state is not None else np.empty((series * tokens, d_model), dtype))
                states = np.empty((num_layers, series * tokens, d_model), dtype)
                pooled = np.empty((series if pools else 0, d_model), dtype)
                self._encode(values, observed, default_scale, _NO_MASK if patch_mask is None else
                             patch_mask[first:last], out.loc[first:last], out.scale[first:last], patch_input, patches,
                             stream, states, pooled)
                if num_layers:
                    out.hidden_states[:, first:last] = states.reshape(num_layers, last - first, channels, tokens,
                                                                      d_model)
                self._apply_head(stream, pooled, out, first, last)
        return out, single

    def _encode(self, values, observed, default_scale, patch_mask, loc, scale, patch_input, patches, stream,
                hidden_states, pooled):
        """kernels.encode_units over every unit of the chunk, split evenly among the threads."""
        config = self.config
        unit_series = config.num_input_channels if config.channel_attention else 1
        units = patches.shape[0] // unit_series
        tasks = min(get_num_threads(), units)
        key = self._scratch_key()

        def task(index):
            # Task 0 runs on the calling thread when a compute slot is free, and starts first: it takes the
            # last share, the larger one when they differ.
            share = tasks - 1 - index
            work = scratch(key, lambda: kernels.make_workspace(key[1], config.d_model, config.ffn_dim, self.dtype))
            kernels.encode_units(values, observed, default_scale, patch_mask, share * units // tasks,
                                 (share + 1) * units // tasks, self.weights.encoder, self._switches, self._heads_kind,
                                 work, loc, scale, patch_input, patches, stream, hidden_states, pooled)

        run_tasks(task, tasks)

    def _head_output(self, batch, dtype):
        return None

    def _apply_head(self, stream, pooled, out, first, last):
        pass

    @staticmethod
    def _hidden_tuple(out: _Arrays, single):
        if out.hidden_states is None:
            return None
        return tuple(_unbatch(state, single) for state in out.hidden_states)

    def __repr__(self):
        c = self.config
        return (f"{type(self).__name__}(channels={c.num_input_channels}, context_length={c.context_length}, "
                f"d_model={c.d_model}, layers={c.num_hidden_layers}, dtype={self.dtype.name})")


_NO_MASK = np.zeros((0, 0, 0), dtype=bool)


def _part(mask, first, last):
    return None if mask is None else mask[first:last]


def _unbatch(array, single):
    return array[0] if single else array


def _parameters(array, single):
    """[batch, parameters, ...] -> one contiguous array per parameter, [batch, ...] (or [...] for one series)."""
    return tuple(_unbatch(np.ascontiguousarray(array[:, k]), single) for k in range(array.shape[1]))


class PatchTSTModel(_PatchTSTBase):
    """The encoder alone: ``last_hidden_state``, ``loc``, ``scale``, ``patch_input``."""

    head = "none"

    def __call__(self, past_values, past_observed_mask=None, mask=None, output_hidden_states=False):
        """Encode ``past_values`` [batch, context_length, channels] (or one series [context_length, channels]).

        ``past_observed_mask`` (same shape, 1 = observed) marks missing values; without it NaN / ±inf count as
        missing. ``mask`` [batch, channels, patches] (True = masked) replaces patches with ``mask_value``.
        ``output_hidden_states=True`` adds each encoder layer's input. Returns a ``PatchTSTModelOutput``."""
        out, single = self._forward(past_values, past_observed_mask, mask, output_hidden_states)
        return PatchTSTModelOutput(
            last_hidden_state=_unbatch(out.last_hidden_state, single), loc=_unbatch(out.loc, single),
            scale=_unbatch(out.scale, single), patch_input=_unbatch(out.patch_input, single),
            mask=None if mask is None else np.asarray(mask, dtype=bool), hidden_states=self._hidden_tuple(out, single),
        )


class PatchTSTForPrediction(_PatchTSTBase):
    """Forecasts ``prediction_length`` steps: ``prediction_outputs`` [batch, horizon, channels]; with a
    distribution head, a tuple of its parameters (not rescaled, exactly as transformers returns them)."""

    head = "prediction"

    def __call__(self, past_values, past_observed_mask=None, output_hidden_states=False):
        """Forecast from ``past_values`` [batch, context_length, channels] (or one series [context_length,
        channels]); ``past_observed_mask`` (same shape, 1 = observed) marks missing values, and without it NaN /
        ±inf count as missing. Returns a ``PatchTSTForPredictionOutput`` with transformers' fields."""
        out, single = self._forward(past_values, past_observed_mask, None, output_hidden_states)
        parameters = _parameters(out.head, single)
        return PatchTSTForPredictionOutput(parameters if self._switches.distribution else parameters[0],
                                           _unbatch(out.loc, single), _unbatch(out.scale, single),
                                           self._hidden_tuple(out, single))

    def _head_output(self, batch, dtype):
        parameters = self.weights.head.weight.shape[1]
        return np.empty((batch, parameters, self.config.prediction_length, self.config.num_input_channels), dtype)

    def _apply_head(self, stream, pooled, out, first, last):
        # pooled rows, or without pooling each series' rows flattened
        features = pooled if pooled.shape[0] else stream.reshape((last - first) * self.config.num_input_channels, -1)
        kernels.prediction_head(features, out.loc[first:last], out.scale[first:last], self.weights.head.weight,
                                self.weights.head.bias, self._switches, out.head[first:last])

    def point_forecast(self, output: PatchTSTForPredictionOutput) -> np.ndarray:
        """[batch, horizon, channels] point forecasts: ``prediction_outputs`` for a point head, the mean of
        the predicted distribution (in data units, as transformers' ``distribution(...).mean``) otherwise."""
        if not self._switches.distribution:
            return output.prediction_outputs
        params, loc, scale = output.prediction_outputs, output.loc, output.scale
        kind = self.config.distribution_output
        if kind == "student_t":
            df, mean = params[0], params[1]
            return np.where(df > 1, mean, np.nan) * scale + loc
        if kind == "normal":
            return params[0] * scale + loc
        total_count, logits = params  # negative binomial: transformers adds log(scale) to the logits, ignores loc
        return total_count * np.exp(logits + np.log(scale))

    def forecast(self, history, past_observed_mask=None, freq=None, pad: bool = False):
        """Point forecasts for a DataFrame (columns = channels; a DatetimeIndex or a time column) or an array.

        A DataFrame gets a DataFrame back, indexed by the ``prediction_length`` steps after its last row, with
        the same column names. Its timestamps must increase; the step is inferred (``freq``, e.g. ``"h"``,
        overrides it), and rows missing from that grid are inserted as missing values, with a warning. The
        last ``context_length`` rows are used; a shorter history is an error unless ``pad=True``, which
        fills the start with missing values. NaN marks a missing value, as does 0 in ``past_observed_mask``
        ([rows, channels]). An array gets ``point_forecast(self(array, past_observed_mask))``.
        """
        if not hasattr(history, "columns"):
            return self.point_forecast(self(history, past_observed_mask))
        import pandas as pd

        from .frames import frame_to_values, future_index

        config = self.config
        values, times, step, columns = frame_to_values(history, config.context_length, config.num_input_channels,
                                                       freq, pad, past_observed_mask)
        prediction = self.point_forecast(self(values))
        return pd.DataFrame(prediction, index=future_index(times, step, config.prediction_length, len(history)),
                            columns=columns)


class PatchTSTForPretraining(_PatchTSTBase):
    """Reconstructs the patched (scaled) input: ``prediction_output`` [batch, channels, patches, patch_length].

    Random masking is a training device and is not applied; pass ``mask`` ([batch, channels, patches],
    True = masked) to mask patches explicitly with ``config.mask_value``.
    """

    head = "pretraining"

    def __call__(self, past_values, past_observed_mask=None, mask=None, output_hidden_states=False):
        """Reconstruct the patches of ``past_values`` [batch, context_length, channels] (or one series);
        ``mask`` [batch, channels, patches] (True = masked) masks patches first. Returns a
        ``PatchTSTForPretrainingOutput``."""
        out, single = self._forward(past_values, past_observed_mask, mask, output_hidden_states)
        return PatchTSTForPretrainingOutput(_unbatch(out.head, single), self._hidden_tuple(out, single))

    def _head_output(self, batch, dtype):
        config = self.config
        return np.empty((batch, config.num_input_channels, config.num_patches, config.patch_length), dtype)

    def _apply_head(self, stream, pooled, out, first, last):
        config, head = self.config, self.weights.head
        target = out.head[first:last]
        kernels.pretraining_head(stream, config.num_patches + int(config.use_cls_token), bool(config.use_cls_token),
                                 head.weight[0, 0], head.bias[0, 0],
                                 target.reshape(-1, config.num_patches, config.patch_length))


class _PooledHead(_PatchTSTBase):
    """Classification and regression: one Linear over every channel's pooled rows."""

    def _head_output(self, batch, dtype):
        weight = self.weights.head.weight  # [1, parameters, channels * d_model, targets]
        return np.empty((batch, weight.shape[1], weight.shape[3]), dtype)

    def _apply_head(self, stream, pooled, out, first, last):
        head = self.weights.head
        kernels.pooled_head(pooled.reshape(last - first, -1), head.weight[0], head.bias[0], self._switches,
                            out.head[first:last])


class PatchTSTForClassification(_PooledHead):
    """``prediction_logits`` [batch, num_targets] (scores before softmax)."""

    head = "classification"

    def __call__(self, past_values, past_observed_mask=None, output_hidden_states=False):
        """Classify ``past_values`` [batch, context_length, channels] (or one series); returns a
        ``PatchTSTForClassificationOutput``."""
        out, single = self._forward(past_values, past_observed_mask, None, output_hidden_states)
        return PatchTSTForClassificationOutput(_parameters(out.head, single)[0], self._hidden_tuple(out, single))


class PatchTSTForRegression(_PooledHead):
    """``regression_outputs`` [batch, num_targets], squashed into ``output_range`` when the config sets one.

    A distribution head returns its parameters as a tuple; with ``num_targets == 1`` each is [batch], since
    transformers squeezes the last axis there.
    """

    head = "regression"

    def __call__(self, past_values, past_observed_mask=None, output_hidden_states=False):
        """Regress ``past_values`` [batch, context_length, channels] (or one series); returns a
        ``PatchTSTForRegressionOutput``."""
        out, single = self._forward(past_values, past_observed_mask, None, output_hidden_states)
        parameters = _parameters(out.head, single)
        if not self._switches.distribution:
            return PatchTSTForRegressionOutput(parameters[0], self._hidden_tuple(out, single))
        if self.config.num_targets == 1:
            parameters = tuple(p[..., 0] for p in parameters)
        return PatchTSTForRegressionOutput(parameters, self._hidden_tuple(out, single))


MODEL_CLASSES = (PatchTSTModel, PatchTSTForPrediction, PatchTSTForPretraining, PatchTSTForClassification,
                 PatchTSTForRegression)
_CLASS_OF_HEAD = {cls.head: cls.__name__ for cls in MODEL_CLASSES}
_CLASS_BY_HEAD = {cls.head: cls for cls in MODEL_CLASSES}


def model_class_for(bundle_config: PatchTSTConfig, hf_weights: dict):
    """The class config.json's ``architectures`` names; without one, the head the weights show."""
    head = head_of_config(bundle_config)
    if head is None:
        mapped = map_patchtst_weights(hf_weights).mapped
        head = check_patchtst_compatibility(mapped, bundle_config).report.head
    if head not in _CLASS_BY_HEAD:
        raise ArchitectureMismatchError(
            f"cannot tell which PatchTST class this checkpoint is: architectures={bundle_config.architectures}, "
            f"weights suggest {head!r}; expected one of {sorted(ARCHITECTURE_HEADS)}"
        )
    return _CLASS_BY_HEAD[head]


def from_pretrained(repo_id_or_path, revision=None, dtype: str = "float32", cache_dir=None, token=None,
                    local_files_only: bool = False):
    """Load a checkpoint as the class its ``config.json`` names.

    ``repo_id_or_path``: a folder that exists is local; otherwise a Hub repo id, downloaded into
    huggingface_hub's cache (``revision`` pins a branch, tag or commit; ``local_files_only`` never
    touches the network; ``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HUB_OFFLINE`` and ``HF_HOME`` apply).
    """
    from .hub import load_bundle
    bundle = load_bundle(repo_id_or_path, revision, cache_dir, token, local_files_only)
    tensors = bundle.load_tensors()
    return model_class_for(bundle.config, tensors).from_hub_weights(bundle.config, tensors, dtype)


def compile_kernels(dtype: str = "float32") -> None:
    """Compile, or load from the cache, every PatchTST kernel for ``dtype``: tiny models of each class, with
    attention heads of 8 features and of another size, each run once. Any checkpoint of that dtype then
    starts without compiling."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    rng = np.random.default_rng(0)
    for head_dim in (kernels.BLOCK, kernels.BLOCK // 2):
        for cls in MODEL_CLASSES:
            config = PatchTSTConfig(num_input_channels=2, context_length=16, patch_length=4, patch_stride=4,
                                    d_model=2 * head_dim, num_attention_heads=2, ffn_dim=8, num_hidden_layers=1,
                                    prediction_length=2, positional_encoding_type="random",
                                    architectures=[cls.__name__])
            mapped = {name: np.abs(rng.normal(size=shape)) + 0.5 for name, shape in expected_shapes(config, cls.head).items()}
            model = cls(config, load_patchtst_weights(mapped, config, cls.head, DTYPES[dtype]), dtype)
            model(np.zeros((1, config.context_length, config.num_input_channels), dtype))
