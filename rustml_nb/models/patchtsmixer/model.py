"""PatchTSMixer model classes, named as transformers names them: thin wrappers over the shared forward pass
(``models.base``), the mixer encoder (``forward.encode_units``) and the shared heads."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ...errors import ArchitectureMismatchError
from ...kernels import attention, heads, mixer, rows, series
from ..base import FamilyModel, Forecaster, check_agreement, head_parameters, model_dtype, unbatch
from ..config import DISTRIBUTION_PARAMETERS
from . import forward
from .config import PatchTSMixerConfig
from .detection import ArchitectureCheck, check_patchtsmixer_compatibility, expected_shapes, head_of_config
from .mapping import map_patchtsmixer_weights
from .weights import PatchTSMixerWeights, load_patchtsmixer_weights


# --------------------------------------------------------------------------------------------------
# Outputs: transformers' field names and shapes, NumPy arrays
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class PatchTSMixerModelOutput:
    last_hidden_state: np.ndarray  # [batch, channels, patches, d_model]
    hidden_states: tuple[np.ndarray, ...] | None = None  # the output of each layer, when asked
    patch_input: np.ndarray | None = None  # [batch, channels, patches, patch_length]
    mask: np.ndarray | None = None  # [batch, channels, patches], the patch mask given, if any
    loc: np.ndarray | None = None  # [batch, 1, channels]
    scale: np.ndarray | None = None  # [batch, 1, channels]


@dataclasses.dataclass
class PatchTSMixerForPredictionOutput:
    prediction_outputs: np.ndarray | tuple[np.ndarray, ...]  # [batch, horizon, channels], or one per parameter
    last_hidden_state: np.ndarray
    hidden_states: tuple[np.ndarray, ...] | None = None
    loc: np.ndarray | None = None  # [batch, 1, channels forecast]
    scale: np.ndarray | None = None


@dataclasses.dataclass
class PatchTSMixerForPreTrainingOutput:
    prediction_outputs: np.ndarray  # [batch, channels, patches, patch_length]
    last_hidden_state: np.ndarray
    hidden_states: tuple[np.ndarray, ...] | None = None


@dataclasses.dataclass
class PatchTSMixerForTimeSeriesClassificationOutput:
    prediction_outputs: np.ndarray  # [batch, num_targets]
    last_hidden_state: np.ndarray  # after the scale injection, as transformers returns it
    hidden_states: tuple[np.ndarray, ...] | None = None


@dataclasses.dataclass
class PatchTSMixerForRegressionOutput:
    regression_outputs: np.ndarray | tuple[np.ndarray, ...]  # [batch, num_targets] (a distribution: a tuple)
    last_hidden_state: np.ndarray
    hidden_states: tuple[np.ndarray, ...] | None = None


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------
AGGREGATIONS = {None: forward.AGGREGATE_NONE, "use_last": forward.AGGREGATE_LAST, "max_pool": rows.POOL_MAX,
                "avg_pool": rows.POOL_MEAN}


class _PatchTSMixerBase(FamilyModel):
    """Shared by the five classes: loading and the mixer encoder."""

    head: ClassVar[str]
    keeps_last_hidden_state = True

    def __init__(self, config: PatchTSMixerConfig, weights: PatchTSMixerWeights, dtype="float32",
                 check: ArchitectureCheck | None = None):
        super().__init__(config, weights, dtype, check)
        self._switches = forward.Switches(
            scaling=series.SCALINGS[config.scaler], patch_stride=config.patch_stride, mask_value=float(config.mask_value),
            mixer=mixer.MixerSwitches(
                norm_type=rows.NORM_BATCH if config.batch_norm else rows.NORM_LAYER, norm_eps=float(config.norm_eps),
                mix_channel=config.mode == "mix_channel", gated=bool(config.gated_attn),
                self_attn=bool(config.self_attn), num_heads=config.self_attn_heads))
        self._heads_kind = attention.heads_kind(config.head_dim if config.self_attn else None)
        self.tokens = config.num_patches
        self.unit_series = config.num_input_channels if config.mode == "mix_channel" else 1
        self.scaling = self._switches.scaling
        self.layers = config.num_layers
        self.block_rows = max(forward.BLOCK_ROWS, self.tokens * self.unit_series)
        self._distribution = 0
        if self.head in ("prediction", "regression") and config.has_distribution_head:
            self._distribution = 1 + list(DISTRIBUTION_PARAMETERS).index(config.distribution_output)

    @classmethod
    def from_hub_weights(cls, config: PatchTSMixerConfig, hf_weights: dict, dtype: str = "float32"):
        """Map, detect, transpose and load a transformers state dict (``{name: array}``)."""
        model_dtype(dtype)
        named = head_of_config(config)
        if named is not None and named != cls.head:
            raise ArchitectureMismatchError(
                f"{cls.__name__} loads a {cls.head} checkpoint; config.json's architectures say {config.architectures}")
        mapping = map_patchtsmixer_weights(hf_weights)
        check = check_patchtsmixer_compatibility(mapping.mapped,
                                                 dataclasses.replace(config, architectures=[cls.__name__]))
        check_agreement(check)
        weights = load_patchtsmixer_weights(mapping.mapped, config, cls.head, model_dtype(dtype).type,
                                            mapping.unmapped, mapping.sources)
        return cls(config, weights, dtype, check)

    def _scratch_key(self):
        config = self.config
        return ("patchtsmixer", self.dtype.str, self.block_rows, config.d_model, config.expansion_factor,
                bool(config.self_attn))

    def _make_scratch(self):
        config = self.config
        return mixer.make_workspace(self.block_rows, config.d_model, config.expansion_factor, config.self_attn,
                                      self.dtype)

    def _encode_task(self, part, first_unit, last_unit, work):
        forward.encode_units(part.values, part.observed, part.default_scale, part.patch_mask, first_unit, last_unit,
                             self.weights.encoder, self._switches, self._heads_kind, rows.SoftmaxGate(), work,
                             part.loc, part.scale,
                             part.patch_input, part.patches, part.stream, part.hidden_states)

    def _outputs(self, out, single):
        return unbatch(out.last_hidden_state, single), self._hidden_tuple(out, single)


class PatchTSMixerModel(_PatchTSMixerBase):
    """The encoder alone: ``last_hidden_state``, ``hidden_states``, ``patch_input``, ``loc``, ``scale``."""

    head = "none"

    def __call__(self, past_values, observed_mask=None, mask=None, output_hidden_states=False):
        """Encode ``past_values`` [batch, context_length, channels] (or one series [context_length, channels]).

        ``observed_mask`` (same shape, 1 = observed) marks missing values; without it NaN / ±inf count as
        missing. ``mask`` [batch, channels, patches] (True = masked) replaces patches with ``mask_value``.
        ``output_hidden_states=True`` adds each layer's output. Returns a ``PatchTSMixerModelOutput``."""
        out, single = self._forward(past_values, observed_mask, mask, output_hidden_states)
        hidden, states = self._outputs(out, single)
        return PatchTSMixerModelOutput(hidden, states, unbatch(out.patch_input, single),
                                       None if mask is None else np.asarray(mask, dtype=bool),
                                       unbatch(out.loc, single), unbatch(out.scale, single))


class PatchTSMixerForPrediction(Forecaster, _PatchTSMixerBase):
    """Forecasts ``prediction_length`` steps of the channels ``prediction_channel_indices`` names (all by
    default): ``prediction_outputs`` [batch, horizon, channels]; with a distribution head, a tuple of its
    parameters (not rescaled, as transformers returns them)."""

    head = "prediction"

    @property
    def distribution(self):
        return self.config.distribution_output if self._distribution else None

    @property
    def output_channels(self) -> list[int]:
        return self.config.output_channels

    def __call__(self, past_values, observed_mask=None, output_hidden_states=False):
        """Forecast from ``past_values`` [batch, context_length, channels] (or one series); ``observed_mask``
        (same shape, 1 = observed) marks missing values, and without it NaN / ±inf count as missing."""
        out, single = self._forward(past_values, observed_mask, None, output_hidden_states)
        channels = self.output_channels
        parameters = head_parameters(out.head[..., channels], single)
        hidden, states = self._outputs(out, single)
        return PatchTSMixerForPredictionOutput(parameters if self._distribution else parameters[0], hidden, states,
                                               unbatch(np.ascontiguousarray(out.loc[..., channels]), single),
                                               unbatch(np.ascontiguousarray(out.scale[..., channels]), single))

    def _head_output(self, batch, channels, dtype):
        count = self.weights.head.weight.shape[1]
        return np.empty((batch, count, self.config.prediction_length, channels), dtype)

    def _series_head(self, part, first_series, last_series):
        features = part.stream.reshape(part.patches.shape[0], -1)[first_series:last_series]
        heads.prediction_head(features, first_series, part.loc, part.scale, self.weights.head.weight,
                              self.weights.head.bias, self._distribution, float(np.finfo(self.dtype).eps), part.head)


class PatchTSMixerForPretraining(_PatchTSMixerBase):
    """Reconstructs the patched (scaled) input: ``prediction_outputs`` [batch, channels, patches, patch_length].

    Random masking is a training device and is not applied; pass ``mask`` ([batch, channels, patches],
    True = masked) to mask patches explicitly with ``config.mask_value``.
    """

    head = "pretraining"

    def __call__(self, past_values, observed_mask=None, mask=None, output_hidden_states=False):
        """Reconstruct the patches of ``past_values`` [batch, context_length, channels] (or one series)."""
        out, single = self._forward(past_values, observed_mask, mask, output_hidden_states)
        hidden, states = self._outputs(out, single)
        return PatchTSMixerForPreTrainingOutput(unbatch(out.head, single), hidden, states)

    def _head_output(self, batch, channels, dtype):
        config = self.config
        return np.empty((batch, channels, config.num_patches, config.patch_length), dtype)

    def _apply_head(self, part, out, first, last):
        config, head = self.config, self.weights.head
        heads.pretraining_head(part.stream, self.tokens, False, head.weight[0, 0], head.bias[0, 0],
                               out.head[first:last].reshape(-1, config.num_patches, config.patch_length))


class _LinearHead(_PatchTSMixerBase):
    """Classification and regression: the scale injection (with std or mean scaling), aggregation over
    patches, one Linear over every channel's aggregate."""

    def _head_output(self, batch, channels, dtype):
        weight = self.weights.head.weight  # [1, parameters, width, targets]
        return np.empty((batch, weight.shape[1], weight.shape[3]), dtype)

    def _apply_head(self, part, out, first, last):
        config, head = self.config, self.weights.head
        batch = last - first
        if head.inject:  # in place: last_hidden_state is returned after the injection, as transformers does
            forward.inject_scale(part.stream, out.loc[first:last], out.scale[first:last], config.num_input_channels,
                                 config.num_patches, *head.inject, part.stream)
        width = head.weight.shape[2] // config.num_input_channels
        features = np.empty((batch * config.num_input_channels, width), self.dtype)
        forward.aggregate_patches(part.stream, config.num_patches, AGGREGATIONS[config.head_aggregation], features)
        has_range = config.output_range is not None and not self._distribution
        low, high = config.output_range if has_range else (0.0, 1.0)
        heads.pooled_head(features.reshape(batch, -1), head.weight[0], head.bias[0], self._distribution,
                          float(np.finfo(self.dtype).eps), has_range, float(low), float(high), out.head[first:last])


class PatchTSMixerForTimeSeriesClassification(_LinearHead):
    """``prediction_outputs`` [batch, num_targets] (scores before softmax)."""

    head = "classification"

    def __call__(self, past_values, observed_mask=None, output_hidden_states=False):
        """Classify ``past_values`` [batch, context_length, channels] (or one series). transformers' class takes
        no observed mask; here NaN / ±inf (or ``observed_mask``) mark missing values for the scaler."""
        out, single = self._forward(past_values, observed_mask, None, output_hidden_states)
        hidden, states = self._outputs(out, single)
        return PatchTSMixerForTimeSeriesClassificationOutput(head_parameters(out.head, single)[0], hidden, states)


class PatchTSMixerForRegression(_LinearHead):
    """``regression_outputs`` [batch, num_targets], squashed into ``output_range`` when the config sets one; a
    distribution head returns its parameters as a tuple (each [batch] when ``num_targets`` is 1, as
    transformers squeezes them)."""

    head = "regression"

    def __call__(self, past_values, observed_mask=None, output_hidden_states=False):
        """Regress ``past_values`` [batch, context_length, channels] (or one series); NaN / ±inf (or
        ``observed_mask``) mark missing values for the scaler."""
        out, single = self._forward(past_values, observed_mask, None, output_hidden_states)
        parameters = head_parameters(out.head, single)
        hidden, states = self._outputs(out, single)
        if not self._distribution:
            return PatchTSMixerForRegressionOutput(parameters[0], hidden, states)
        if self.config.num_targets == 1:
            parameters = tuple(p[..., 0] for p in parameters)
        return PatchTSMixerForRegressionOutput(parameters, hidden, states)


MODEL_CLASSES = (PatchTSMixerModel, PatchTSMixerForPrediction, PatchTSMixerForPretraining,
                 PatchTSMixerForTimeSeriesClassification, PatchTSMixerForRegression)


def compile_kernels(dtype: str = "float32") -> None:
    """Compile, or load from the cache, every PatchTSMixer kernel for ``dtype``: tiny models of each class,
    without self-attention and with self-attention heads of 8 features and of another size, each run once."""
    rng = np.random.default_rng(0)
    for head_dim in (None, attention.BLOCK, attention.BLOCK // 2):
        for cls in MODEL_CLASSES:
            config = PatchTSMixerConfig(num_input_channels=2, context_length=16, patch_length=4, patch_stride=4,
                                        d_model=2 * (head_dim or 4), num_layers=1, self_attn=head_dim is not None,
                                        self_attn_heads=2, prediction_length=2, architectures=[cls.__name__])
            mapped = {name: np.abs(rng.normal(size=shape)) + 0.5 for name, shape in expected_shapes(config, cls.head).items()}
            model = cls(config, load_patchtsmixer_weights(mapped, config, cls.head, model_dtype(dtype).type), dtype)
            model(np.zeros((1, config.context_length, config.num_input_channels), dtype))
