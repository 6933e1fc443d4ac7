"""PatchTST model classes, named as transformers names them: thin wrappers over the shared forward pass
(``models.base``), the PatchTST encoder (``forward.encode_units``) and the shared heads."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ...errors import ArchitectureMismatchError, ConfigError, UnsupportedArchitectureError
from ...kernels import attention, heads, rows, series
from ..base import FamilyModel, Forecaster, check_agreement, head_parameters, model_dtype, unbatch
from . import forward
from .config import DISTRIBUTION_PARAMETERS, PatchTSTConfig
from .detection import ArchitectureCheck, check_patchtst_compatibility, expected_shapes, head_of_config
from .mapping import map_patchtst_weights
from .weights import PatchTSTWeights, load_patchtst_weights


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
def _switches(config: PatchTSTConfig, head: str, dtype) -> forward.Switches:
    distribution = 0
    if head in ("prediction", "regression") and config.has_distribution_head:
        distribution = 1 + list(DISTRIBUTION_PARAMETERS).index(config.distribution_output)
    low, high = config.output_range if (config.output_range is not None and head == "regression") else (0.0, 1.0)
    return forward.Switches(
        scaling=series.SCALINGS[config.scaler],
        norm_type=rows.NORM_BATCH if config.norm_type == "batchnorm" else rows.NORM_LAYER,
        pre_norm=bool(config.pre_norm),
        channel_attention=bool(config.channel_attention),
        activation=rows.ACT_GELU if config.activation_function == "gelu" else rows.ACT_RELU,
        use_cls_token=bool(config.use_cls_token),
        pooling={None: rows.POOL_NONE, "mean": rows.POOL_MEAN, "max": rows.POOL_MAX}[config.pooling_type],
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
        # (its second Linear, the residual, a BatchNorm or no norm): see forward.encode_units.
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
    check_agreement(check)
    if head in ("classification", "regression") and config.pooling_type is None and not config.use_cls_token:
        raise ConfigError(
            f"a {head} head needs pooling_type 'mean' or 'max' or a cls token; got pooling_type None "
            "(transformers raises on it at forward time)"
        )


class _PatchTSTBase(FamilyModel):
    """Shared by the five classes: loading and PatchTST's encoder."""

    head: ClassVar[str]

    def __init__(self, config: PatchTSTConfig, weights: PatchTSTWeights, dtype="float32",
                 check: ArchitectureCheck | None = None):
        super().__init__(config, weights, dtype, check)
        self._switches = _switches(config, self.head, self.dtype)
        self._heads_kind = attention.heads_kind(config.head_dim)
        self.tokens = config.num_patches + int(config.use_cls_token)
        self.unit_series = config.num_input_channels if config.channel_attention else 1
        self.pools = (self.head in ("prediction", "classification", "regression")
                      and (config.pooling_type is not None or config.use_cls_token))
        self.scaling = self._switches.scaling
        self.layers = config.num_hidden_layers
        self.block_rows = max(forward.BLOCK_ROWS, self.tokens * self.unit_series)

    @classmethod
    def from_hub_weights(cls, config: PatchTSTConfig, hf_weights: dict, dtype: str = "float32"):
        """Map, detect, transpose and load a transformers state dict (``{name: array}``)."""
        model_dtype(dtype)
        named = head_of_config(config)
        if named is not None and named != cls.head:
            raise ArchitectureMismatchError(
                f"{cls.__name__} loads a {cls.head} checkpoint; config.json's architectures say {config.architectures}"
            )
        hinted = dataclasses.replace(config, architectures=[_CLASS_OF_HEAD[cls.head]])
        mapping = map_patchtst_weights(hf_weights)
        check = check_patchtst_compatibility(mapping.mapped, hinted)
        _check_runnable(config, cls.head, check)
        weights = load_patchtst_weights(mapping.mapped, config, cls.head, model_dtype(dtype).type, mapping.unmapped,
                                        mapping.sources)
        return cls(config, weights, dtype, check)

    def _scratch_key(self):
        return ("patchtst", self.dtype.str, self.block_rows, self.config.d_model, self.config.ffn_dim)

    def _make_scratch(self):
        return forward.make_workspace(self.block_rows, self.config.d_model, self.config.ffn_dim, self.dtype)

    def _encode_task(self, part, first_unit, last_unit, work):
        forward.encode_units(part.values, part.observed, part.default_scale, part.patch_mask, first_unit, last_unit,
                             self.weights.encoder, self._switches, self._heads_kind, work, part.loc, part.scale,
                             part.patch_input, part.patches, part.stream, part.hidden_states, part.pooled)


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
            last_hidden_state=unbatch(out.last_hidden_state, single), loc=unbatch(out.loc, single),
            scale=unbatch(out.scale, single), patch_input=unbatch(out.patch_input, single),
            mask=None if mask is None else np.asarray(mask, dtype=bool), hidden_states=self._hidden_tuple(out, single),
        )


class PatchTSTForPrediction(Forecaster, _PatchTSTBase):
    """Forecasts ``prediction_length`` steps: ``prediction_outputs`` [batch, horizon, channels]; with a
    distribution head, a tuple of its parameters (not rescaled, exactly as transformers returns them)."""

    head = "prediction"

    def __call__(self, past_values, past_observed_mask=None, output_hidden_states=False):
        """Forecast from ``past_values`` [batch, context_length, channels] (or one series [context_length,
        channels]); ``past_observed_mask`` (same shape, 1 = observed) marks missing values, and without it NaN /
        ±inf count as missing. Returns a ``PatchTSTForPredictionOutput`` with transformers' fields."""
        out, single = self._forward(past_values, past_observed_mask, None, output_hidden_states)
        parameters = head_parameters(out.head, single)
        return PatchTSTForPredictionOutput(parameters if self._switches.distribution else parameters[0],
                                           unbatch(out.loc, single), unbatch(out.scale, single),
                                           self._hidden_tuple(out, single))

    @property
    def distribution(self):
        return self.config.distribution_output if self._switches.distribution else None

    def _head_output(self, batch, channels, dtype):
        count = self.weights.head.weight.shape[1]
        return np.empty((batch, count, self.config.prediction_length, channels), dtype)

    def _series_head(self, part, first_series, last_series):
        # pooled rows, or without pooling each series' rows flattened
        features = part.pooled if part.pooled.shape[0] else part.stream.reshape(part.patches.shape[0], -1)
        heads.prediction_head(features[first_series:last_series], first_series, part.loc, part.scale,
                              self.weights.head.weight, self.weights.head.bias, self._switches.distribution,
                              self._switches.dtype_eps, part.head)


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
        return PatchTSTForPretrainingOutput(unbatch(out.head, single), self._hidden_tuple(out, single))

    def _head_output(self, batch, channels, dtype):
        config = self.config
        return np.empty((batch, channels, config.num_patches, config.patch_length), dtype)

    def _apply_head(self, part, out, first, last):
        config, head = self.config, self.weights.head
        target = out.head[first:last]
        heads.pretraining_head(part.stream, self.tokens, bool(config.use_cls_token), head.weight[0, 0], head.bias[0, 0],
                               target.reshape(-1, config.num_patches, config.patch_length))


class _PooledHead(_PatchTSTBase):
    """Classification and regression: one Linear over every channel's pooled rows."""

    def _head_output(self, batch, channels, dtype):
        weight = self.weights.head.weight  # [1, parameters, channels * d_model, targets]
        return np.empty((batch, weight.shape[1], weight.shape[3]), dtype)

    def _apply_head(self, part, out, first, last):
        head, switches = self.weights.head, self._switches
        heads.pooled_head(part.pooled.reshape(last - first, -1), head.weight[0], head.bias[0], switches.distribution,
                          switches.dtype_eps, switches.has_output_range, switches.output_low, switches.output_high,
                          out.head[first:last])


class PatchTSTForClassification(_PooledHead):
    """``prediction_logits`` [batch, num_targets] (scores before softmax)."""

    head = "classification"

    def __call__(self, past_values, past_observed_mask=None, output_hidden_states=False):
        """Classify ``past_values`` [batch, context_length, channels] (or one series); returns a
        ``PatchTSTForClassificationOutput``."""
        out, single = self._forward(past_values, past_observed_mask, None, output_hidden_states)
        return PatchTSTForClassificationOutput(head_parameters(out.head, single)[0], self._hidden_tuple(out, single))


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
        parameters = head_parameters(out.head, single)
        if not self._switches.distribution:
            return PatchTSTForRegressionOutput(parameters[0], self._hidden_tuple(out, single))
        if self.config.num_targets == 1:
            parameters = tuple(p[..., 0] for p in parameters)
        return PatchTSTForRegressionOutput(parameters, self._hidden_tuple(out, single))


MODEL_CLASSES = (PatchTSTModel, PatchTSTForPrediction, PatchTSTForPretraining, PatchTSTForClassification,
                 PatchTSTForRegression)
_CLASS_OF_HEAD = {cls.head: cls.__name__ for cls in MODEL_CLASSES}


def compile_kernels(dtype: str = "float32") -> None:
    """Compile, or load from the cache, every PatchTST kernel for ``dtype``: tiny models of each class, with
    attention heads of 8 features and of another size, each run once. Any checkpoint of that dtype then
    starts without compiling."""
    model_dtype(dtype)
    rng = np.random.default_rng(0)
    for head_dim in (attention.BLOCK, attention.BLOCK // 2):
        for cls in MODEL_CLASSES:
            config = PatchTSTConfig(num_input_channels=2, context_length=16, patch_length=4, patch_stride=4,
                                    d_model=2 * head_dim, num_attention_heads=2, ffn_dim=8, num_hidden_layers=1,
                                    prediction_length=2, positional_encoding_type="random",
                                    architectures=[cls.__name__])
            mapped = {name: np.abs(rng.normal(size=shape)) + 0.5 for name, shape in expected_shapes(config, cls.head).items()}
            model = cls(config, load_patchtst_weights(mapped, config, cls.head, model_dtype(dtype).type), dtype)
            model(np.zeros((1, config.context_length, config.num_input_channels), dtype))
