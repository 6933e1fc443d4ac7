"""PatchTST model classes, named as transformers names them; thin wrappers around one compiled call.

Each class validates its inputs in Python, calls ``kernels.patchtst_forward`` once, and wraps the arrays
in an output object whose field names and shapes are transformers'.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numba
import numpy as np

from . import kernels
from .config import DISTRIBUTION_PARAMETERS, PatchTSTConfig
from .detection import ARCHITECTURE_HEADS, ArchitectureCheck, check_patchtst_compatibility, head_of_config
from .errors import ArchitectureMismatchError, ConfigError, InputError, UnsupportedArchitectureError
from .layers import PatchTSTWeights, load_patchtst_weights
from .mapping import map_patchtst_weights
from .threads import single_threaded_blas

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
        head={"none": kernels.HEAD_NONE, "prediction": kernels.HEAD_PREDICTION, "pretraining": kernels.HEAD_PRETRAINING,
              "classification": kernels.HEAD_CLASSIFICATION, "regression": kernels.HEAD_REGRESSION}[head],
        distribution=distribution,
        num_heads=config.num_attention_heads,
        norm_eps=float(config.norm_eps),
        patch_length=config.patch_length,
        patch_stride=config.patch_stride,
        has_output_range=config.output_range is not None and head == "regression" and distribution == 0,
        output_low=float(low),
        output_high=float(high),
        mask_value=float(config.mask_value),
        dtype_eps=float(np.finfo(dtype).eps),
        # The head reads only token means, and after the last layer's activation only affine steps remain
        # (its second Linear, the residual, a BatchNorm or no norm): see kernels.pooled_feed_forward.
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


class _PatchTSTBase:
    """Shared by the five classes: loading, input checks and the compiled call."""

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
        self._workspace: kernels.Workspace | None = None

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
        weights = load_patchtst_weights(mapping.mapped, config, cls.head, DTYPES[dtype], mapping.unmapped)
        return cls(config, weights, dtype, check)

    @classmethod
    def from_pretrained(cls, repo_id_or_path, revision=None, dtype: str = "float32", cache_dir=None, token=None,
                        local_files_only: bool = False):
        """Load a checkpoint folder, or a Hub repo id through ``HubApi`` (see ``rustml_nb.from_pretrained``)."""
        from .hub import load_bundle
        bundle = load_bundle(repo_id_or_path, revision, cache_dir, token, local_files_only)
        return cls.from_hub_weights(bundle.config, bundle.load_tensors(), dtype)

    # --- inputs ---------------------------------------------------------------------------------
    def _prepare(self, past_values, past_observed_mask):
        """Validate; return values, observed (both [batch, time, channels] in the dtype) and whether the
        input was a single series."""
        config = self.config
        values = np.asarray(past_values)
        if values.dtype.kind not in "fiu":
            raise InputError(f"past_values must hold real numbers, got dtype {values.dtype}")
        if values.dtype.kind != "f":
            raise InputError(f"past_values must be a float array, got dtype {values.dtype}; "
                             "convert with values.astype(np.float32)")
        single = values.ndim == 2
        if values.ndim not in (2, 3):
            raise InputError(
                f"past_values must be [batch, context_length, channels] or [context_length, channels], "
                f"got {values.ndim}-D shape {values.shape}"
            )
        if single:
            values = values[None]
        expected = (config.context_length, config.num_input_channels)
        if values.shape[1:] != expected:
            raise InputError(
                f"past_values: expected [batch, {expected[0]}, {expected[1]}] (context_length, num_input_channels), "
                f"got {list(values.shape if not single else values.shape[1:])}"
            )
        if values.shape[0] == 0:
            raise InputError("past_values: the batch is empty")
        finite = np.isfinite(values)
        if past_observed_mask is None:
            observed = finite
        else:
            mask = np.asarray(past_observed_mask)
            if single and mask.ndim == 2:
                mask = mask[None]
            if mask.shape != values.shape:
                raise InputError(f"past_observed_mask: expected shape {list(values.shape)} like past_values, "
                                 f"got {list(np.shape(past_observed_mask))}")
            if mask.dtype.kind not in "biuf":
                raise InputError(f"past_observed_mask must be bool or 0/1 numbers, got dtype {mask.dtype}")
            if mask.dtype.kind != "b" and not np.isin(mask, (0, 1)).all():
                raise InputError("past_observed_mask must hold only 0 and 1 (or booleans)")
            observed = mask.astype(bool)
            bad = observed & ~finite
            if bad.any():
                where = tuple(int(i) for i in np.argwhere(bad)[0])
                raise InputError(
                    f"past_values[{', '.join(map(str, where))}] is {values[where]} but past_observed_mask marks it "
                    "observed; mark it missing (0) or give a finite value"
                )
        # Missing values (NaN/inf included) become 0, as transformers expects of missing entries.
        values = np.where(finite, values, 0.0).astype(self.dtype, copy=False)
        return np.ascontiguousarray(values), np.ascontiguousarray(observed, dtype=self.dtype), single

    def _patch_mask(self, mask, batch):
        if mask is None:
            return np.zeros((0, 0, 0), dtype=np.bool_)
        mask = np.asarray(mask)
        expected = (batch, self.config.num_input_channels, self.config.num_patches)
        if mask.shape != expected:
            raise InputError(f"mask: expected shape {list(expected)} (batch, channels, patches), got {list(mask.shape)}")
        if mask.dtype.kind not in "biu":
            raise InputError(f"mask must be bool or 0/1 integers, got dtype {mask.dtype}")
        return np.ascontiguousarray(mask, dtype=np.bool_)

    def workspace(self) -> kernels.Workspace:
        """Scratch for the compiled encoder: one block of rows per Numba thread, whatever the batch. Kept
        across calls, so repeated calls allocate (and page-fault) nothing; ``release_workspace()`` frees it."""
        config = self.config
        threads = numba.get_num_threads()
        tokens = config.num_patches + int(config.use_cls_token)
        unit_rows = tokens * (config.num_input_channels if config.channel_attention else 1)
        block_rows = max(kernels.BLOCK_ROWS, unit_rows)
        shape = (threads, block_rows * config.d_model)
        if self._workspace is None or self._workspace.normed.shape != shape:
            self._workspace = None  # let the old buffers go before allocating the new ones
            self._workspace = kernels.make_workspace(threads, block_rows, config.d_model, config.ffn_dim, self.dtype)
        return self._workspace

    def release_workspace(self) -> None:
        self._workspace = None

    def _forward(self, past_values, past_observed_mask, mask=None, output_hidden_states=False):
        values, observed, single = self._prepare(past_values, past_observed_mask)
        patch_mask = self._patch_mask(mask, values.shape[0])
        with single_threaded_blas():
            results = kernels.patchtst_forward(values, observed, patch_mask, self.weights, self._switches,
                                               bool(output_hidden_states), self.workspace())
        return results, single

    @staticmethod
    def _hidden_tuple(hidden_states, output_hidden_states):
        return tuple(hidden_states) if output_hidden_states else None

    def __repr__(self):
        c = self.config
        return (f"{type(self).__name__}(channels={c.num_input_channels}, context_length={c.context_length}, "
                f"d_model={c.d_model}, layers={c.num_hidden_layers}, dtype={self.dtype.name})")


def _unbatch(array, single):
    return array[0] if single else array


class PatchTSTModel(_PatchTSTBase):
    """The encoder alone: ``last_hidden_state``, ``loc``, ``scale``, ``patch_input``."""

    head = "none"

    def __call__(self, past_values, past_observed_mask=None, mask=None, output_hidden_states=False):
        (hidden, loc, scale, patch_input, _, states), single = self._forward(
            past_values, past_observed_mask, mask, output_hidden_states)
        return PatchTSTModelOutput(
            last_hidden_state=_unbatch(hidden, single), loc=_unbatch(loc, single), scale=_unbatch(scale, single),
            patch_input=_unbatch(patch_input, single), mask=None if mask is None else np.asarray(mask, dtype=bool),
            hidden_states=self._hidden_tuple(states, output_hidden_states),
        )


class PatchTSTForPrediction(_PatchTSTBase):
    """Forecasts ``prediction_length`` steps: ``prediction_outputs`` [batch, horizon, channels]; with a
    distribution head, a tuple of its parameters (not rescaled, exactly as transformers returns them)."""

    head = "prediction"

    def __call__(self, past_values, past_observed_mask=None, output_hidden_states=False):
        (_, loc, scale, _, out, states), single = self._forward(past_values, past_observed_mask, None,
                                                                 output_hidden_states)
        outputs = tuple(_unbatch(p, single) for p in out) if self._switches.distribution else _unbatch(out[0], single)
        return PatchTSTForPredictionOutput(outputs, _unbatch(loc, single), _unbatch(scale, single),
                                           self._hidden_tuple(states, output_hidden_states))

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

    def forecast(self, history, past_observed_mask=None):
        """Point forecasts for a DataFrame (columns = channels; a DatetimeIndex or a time column) or an array.

        A DataFrame gets a DataFrame back, indexed by the ``prediction_length`` steps after its last row at
        its inferred frequency, with the same column names. Only the last ``context_length`` rows are used;
        NaN marks a missing value. An array gets ``point_forecast(self(array))``.
        """
        if not hasattr(history, "columns"):
            return self.point_forecast(self(history, past_observed_mask))
        from .frames import frame_to_values, future_index

        values, times, columns = frame_to_values(history, self.config.context_length, self.config.num_input_channels)
        prediction = self.point_forecast(self(values, past_observed_mask))
        import pandas as pd

        index = future_index(times, self.config.prediction_length, len(history))
        return pd.DataFrame(prediction, index=index, columns=columns)


class PatchTSTForPretraining(_PatchTSTBase):
    """Reconstructs the patched (scaled) input: ``prediction_output`` [batch, channels, patches, patch_length].

    Random masking is a training device and is not applied; pass ``mask`` ([batch, channels, patches],
    True = masked) to mask patches explicitly with ``config.mask_value``.
    """

    head = "pretraining"

    def __call__(self, past_values, past_observed_mask=None, mask=None, output_hidden_states=False):
        (_, _, _, _, out, states), single = self._forward(past_values, past_observed_mask, mask, output_hidden_states)
        return PatchTSTForPretrainingOutput(_unbatch(out, single), self._hidden_tuple(states, output_hidden_states))


class PatchTSTForClassification(_PatchTSTBase):
    """``prediction_logits`` [batch, num_targets] (scores before softmax)."""

    head = "classification"

    def __call__(self, past_values, past_observed_mask=None, output_hidden_states=False):
        (_, _, _, _, out, states), single = self._forward(past_values, past_observed_mask, None, output_hidden_states)
        return PatchTSTForClassificationOutput(_unbatch(out[0, 0], single),
                                               self._hidden_tuple(states, output_hidden_states))


class PatchTSTForRegression(_PatchTSTBase):
    """``regression_outputs`` [batch, num_targets], squashed into ``output_range`` when the config sets one.

    A distribution head returns its parameters as a tuple; with ``num_targets == 1`` each is [batch], since
    transformers squeezes the last axis there.
    """

    head = "regression"

    def __call__(self, past_values, past_observed_mask=None, output_hidden_states=False):
        (_, _, _, _, out, states), single = self._forward(past_values, past_observed_mask, None, output_hidden_states)
        if self._switches.distribution:
            params = tuple(p[0] for p in out)
            if self.config.num_targets == 1:
                params = tuple(p[:, 0] for p in params)
            result = tuple(_unbatch(p, single) for p in params)
        else:
            result = _unbatch(out[0, 0], single)
        return PatchTSTForRegressionOutput(result, self._hidden_tuple(states, output_hidden_states))


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
