"""TinyTimeMixer model classes, named as granite-tsfm names them: thin wrappers over the shared forward pass
(``models.base``), the shared mixer layer (``kernels.mixer``) run level by level, and TinyTimeMixer's own
steps (``forward``)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ...errors import ArchitectureMismatchError, ConfigError, InputError
from ...inputs import as_array, check_series
from ...kernels import attention, heads, mixer, rows, series
from ..base import FamilyModel, Forecaster, check_agreement, model_dtype, quantile_levels, unbatch
from . import forward
from .config import TinyTimeMixerConfig
from .detection import ArchitectureCheck, check_tinytimemixer_compatibility, expected_shapes, head_of_config
from .mapping import map_tinytimemixer_weights
from .releases import frequency_token
from .weights import TinyTimeMixerWeights, load_tinytimemixer_weights


@dataclasses.dataclass
class TinyTimeMixerModelOutput:
    last_hidden_state: np.ndarray  # [batch, channels, tokens, d_model]
    hidden_states: tuple[np.ndarray, ...] | None = None
    patch_input: np.ndarray | None = None  # [batch, channels, patches, patch_length]
    loc: np.ndarray | None = None  # [batch, 1, channels]
    scale: np.ndarray | None = None  # [batch, 1, channels]


@dataclasses.dataclass
class TinyTimeMixerForPredictionOutput:
    prediction_outputs: np.ndarray  # [batch, horizon, channels forecast]
    backbone_hidden_state: np.ndarray  # [batch, channels, tokens, d_model]
    decoder_hidden_state: np.ndarray  # [batch, channels, tokens, decoder_d_model] (the backbone's without decoder)
    hidden_states: tuple[np.ndarray, ...] | None = None
    loc: np.ndarray | None = None  # [batch, 1, channels forecast]
    scale: np.ndarray | None = None
    input_data: np.ndarray | None = None  # past_values as the model ran it: cut or padded to its length
    quantile_outputs: np.ndarray | None = None  # [batch, levels, horizon, channels forecast]: the multi-quantile head's


def _stack_states(levels, adaptive: bool) -> list[int]:
    """The hidden states granite-tsfm returns for one mixer stack, as the factor each one's rows are split by:
    per adaptive level its input, the input split, each layer's output (split), its output; else each
    layer's output."""
    if not adaptive:
        return [1] * sum(level.stack.feature.fc1_weight.shape[0] for level in levels)
    return [f for level in levels
            for f in [1, level.factor] + [level.factor] * level.stack.feature.fc1_weight.shape[0] + [1]]


def _heads_kind(config: TinyTimeMixerConfig, levels):
    """The attention kernel the levels need: none without self-attention; the 8-feature one only when every
    level's heads are 8 wide (levels split d_model, so their head widths differ); else the general one."""
    if not config.self_attn:
        return attention.heads_kind(None)
    dims = {level.stack.qkv_weight.shape[1] // config.self_attn_heads for level in levels
            if level.stack.qkv_weight.shape[0]}  # a level over a single token has none
    if not dims:
        return attention.heads_kind(None)
    return attention.heads_kind(dims.pop()) if len(dims) == 1 else attention.AnyHeads()


class _TinyTimeMixerBase(FamilyModel):
    head: ClassVar[str]
    keeps_last_hidden_state = True

    def __init__(self, config: TinyTimeMixerConfig, weights: TinyTimeMixerWeights, dtype="float32",
                 check: ArchitectureCheck | None = None):
        super().__init__(config, weights, dtype, check)
        norm = dict(norm_type=rows.NORM_BATCH if config.batch_norm else rows.NORM_LAYER, norm_eps=float(config.norm_eps),
                    gated=bool(config.gated_attn), self_attn=bool(config.self_attn), num_heads=config.self_attn_heads)
        self._gate_kind = rows.gate_kind(config.gate_mode, config.gate_groups)
        self._encoder_switches = mixer.MixerSwitches(mix_channel=config.mode == "mix_channel", **norm)
        self._decoder_switches = mixer.MixerSwitches(mix_channel=config.decoder_mode == "mix_channel", **norm)
        self._encoder_heads = _heads_kind(config, weights.encoder)
        self._decoder_heads = _heads_kind(config, weights.decoder) if weights.decoder else self._encoder_heads
        self.tokens = config.num_tokens
        decodes = self.head == "prediction" and config.use_decoder
        mixes = not config.channel_independent if decodes else config.mode == "mix_channel"
        self.unit_series = config.num_input_channels if mixes else 1
        self._input_channels = config.num_input_channels if mixes else None
        self.scaling = series.SCALINGS[config.scaler]
        self.decoder_width = config.decoder_d_model if decodes else 0
        # granite-tsfm's hidden states, as the factor each one's rows are split by (see _mix)
        self._encoder_states = _stack_states(weights.encoder, config.adaptive_patching_levels > 0)
        self._decoder_stack_states = (_stack_states(weights.decoder, config.decoder_adaptive_patching_levels > 0)
                                      if decodes else [])
        self._decoder_states = ([1] * ((weights.decoder_input.adapter_weight.shape[0] > 0)
                                       + (weights.decoder_input.raw_weight.shape[0] > 0))
                                + self._decoder_stack_states if decodes else [])
        self.layers, self.decoder_layers = len(self._encoder_states), len(self._decoder_states)
        # a unit's rows in a block: its series' tokens, and in the decoder its static categorical rows' too
        self._unit_rows = self.tokens * (self.unit_series + (config.num_categorical if decodes else 0))
        self._block_width = max(config.d_model, self.decoder_width)  # the widest rows a block holds
        self.block_rows = max(forward.BLOCK_VALUES // self._block_width, self._unit_rows)
        self._no_states = np.zeros((0, 0, 0), self.dtype)
        if weights.channel_mixing is not None and weights.channel_mixing.stack is not None:
            self._fcm_switches = mixer.MixerSwitches(mix_channel=False, **{**norm, "gated": bool(config.fcm_gated_attn)})
            self._fcm_heads = attention.heads_kind(config.fcm_features // config.self_attn_heads if config.self_attn
                                                   else None)
        else:
            self._fcm_switches = self._fcm_heads = None

    @property
    def input_channels(self) -> int | None:
        """``num_input_channels`` when channels mix (mix_channel); else None: any number, as granite-tsfm runs."""
        return self._input_channels

    @classmethod
    def from_hub_weights(cls, config: TinyTimeMixerConfig, hf_weights: dict, dtype: str = "float32"):
        """Map, detect, transpose and load a granite-tsfm state dict (``{name: array}``)."""
        model_dtype(dtype)
        named = head_of_config(config)
        if named is not None and named != cls.head and cls.head != "none":  # the backbone loads from either
            raise ArchitectureMismatchError(
                f"{cls.__name__} loads a {cls.head} checkpoint; config.json's architectures say {config.architectures}")
        mapping = map_tinytimemixer_weights(hf_weights)
        check = check_tinytimemixer_compatibility(mapping.mapped, config, cls.head)
        check_agreement(check)
        mapped = mapping.mapped
        if cls.head == "none":  # a backbone loaded from a forecasting checkpoint: the rest is not needed
            mapped = {name: value for name, value in mapped.items() if name.startswith("encoder.")}
        weights = load_tinytimemixer_weights(mapped, config, cls.head, model_dtype(dtype).type, mapping.unmapped,
                                             mapping.sources)
        return cls(config, weights, dtype, check)

    def _scratch_key(self):
        config = self.config
        return ("tinytimemixer", self.dtype.str, self.block_rows, self._block_width, config.expansion_factor,
                bool(config.self_attn), config.gate_outputs)

    def _make_scratch(self):
        config = self.config
        return mixer.make_workspace(self.block_rows, self._block_width, config.expansion_factor, config.self_attn,
                                    self.dtype, config.gate_outputs)

    def _units_per_block(self) -> int:
        return max(self.block_rows // self._unit_rows, 1)

    def _encode_task(self, part, first_unit, last_unit, work):
        config, weights = self.config, self.weights
        tokens, unit = self.tokens, self.unit_series
        units_per_block = self._units_per_block()
        for first in range(first_unit, last_unit, units_per_block):
            s0, s1 = first * unit, min(first + units_per_block, last_unit) * unit
            r0, r1 = s0 * tokens, s1 * tokens
            block = part.stream[r0:r1]  # [rows, d_model]
            forward.embed_block(part.values, part.observed, part.default_scale, s0, s1, self.scaling,
                                config.patch_stride, weights.embedding, part.prefix, config.lead_tokens, part.loc,
                                part.scale, part.patch_input, block)
            if weights.coarse_scales is not None:
                forward.add_coarse_scales(part.patch_input, s0, *weights.coarse_scales, config.lead_tokens, block)
            if weights.spectral is not None:
                forward.add_fft_tokens(part.values, part.loc, part.scale, s0, s1, config, weights.spectral, block)
            if weights.base_norm is not None:  # granite-tsfm's base_norm: each series' tokens x d_model as one row
                series_rows = block.reshape(s1 - s0, tokens * block.shape[1])
                rows.normalize(series_rows, *weights.base_norm, config.norm_eps, rows.NORM_LAYER, series_rows)
            self._mix(block, s1 - s0, weights.encoder, self._encoder_switches, self._encoder_heads, work,
                      part.hidden_states, 0, r0, config.adaptive_patching_levels > 0)
            if not self.decoder_width:
                continue
            decoded = part.decoded[r0:r1]  # [rows, decoder_d_model]
            states = part.decoded_states
            forward.decoder_input(block, part.patch_input, s0, tokens, weights.decoder_input, decoded, states, r0)
            adaptive = config.decoder_adaptive_patching_levels > 0
            if not part.static_rows.shape[1]:
                self._mix(decoded, s1 - s0, weights.decoder, self._decoder_switches, self._decoder_heads, work,
                          states, self.decoder_layers - len(self._decoder_stack_states), r0, adaptive)
                continue
            # static categorical rows join each batch element's channels, repeated over its tokens; the decoder
            # mixes them all, then they are dropped (granite-tsfm's concat and cut)
            channels, extra = config.num_input_channels, part.static_rows.shape[1]
            units, width = (s1 - s0) // channels, decoded.shape[1]
            joined = np.empty((units, channels + extra, tokens, width), self.dtype)
            joined[:, :channels] = decoded.reshape(units, channels, tokens, width)
            joined[:, channels:] = part.static_rows[s0 // channels:s0 // channels + units, :, None, :]
            self._mix(joined.reshape(-1, width), units * (channels + extra), weights.decoder, self._decoder_switches,
                      self._decoder_heads, work, self._no_states, 0, 0, adaptive, channels + extra)
            decoded.reshape(units, channels, tokens, width)[:] = joined[:, :channels]

    def _mix(self, block, count, levels, switches, heads, work, states, first_state, first_row, adaptive,
             channels=None):
        """Every level's layers over block [count * tokens, width], in place: a level of factor f sees each
        token's row as f rows of width / f (granite-tsfm's reshape), so its rows are the same memory.
        states [S or 0, rows of the chunk, width] receive, from state first_state and row first_row on,
        granite-tsfm's hidden states: each adaptive level's input, that input split into the level's rows,
        each layer's output and the level's output; without adaptive levels, each layer's output. ``channels``:
        the series a mix_channel unit holds (default num_input_channels)."""
        rows, width = block.shape
        record = states.shape[0] > 0
        state = first_state
        for level in levels:
            f = level.factor
            if record and adaptive:
                states[state, first_row:first_row + rows] = block
                states[state + 1, first_row:first_row + rows] = block
                state += 2
            split = states.reshape(states.shape[0], -1, width // f) if record else self._no_states
            mixer.mixer_layers(block.reshape(rows * f, width // f), count, channels or self.config.num_input_channels,
                               self.tokens * f, level.stack, switches, heads, self._gate_kind, work, split, state,
                               first_row * f)
            state += level.stack.feature.fc1_weight.shape[0]
            if record and adaptive:
                states[state, first_row:first_row + rows] = block
                state += 1

    def _prepare(self, past_values, past_observed_mask, freq_token):
        """granite-tsfm's input rules: a history longer than the model's length is cut to its last steps, a
        shorter one padded in front with zeros that count as observed, unless a mask is given (then its padding
        is 0, missing). Returns (values, mask, prefix rows or None)."""
        config = self.config
        values = as_array("past_values", past_values)
        steps = values.shape[-2] if values.ndim >= 2 else 0
        values, mask, single = check_series(values, past_observed_mask, steps, self.input_channels)
        if steps == 0:
            raise InputError("past_values: the history is empty")
        channels = values.shape[2]
        for name in ("prediction_channel_indices", "exogenous_channel_indices"):
            indices = getattr(config, name)
            if indices is not None and max(indices) >= channels:
                raise InputError(f"past_values has {channels} channel(s); the checkpoint's {name} {indices} name "
                                 f"channel {max(indices)}")
        length = config.sequence_length
        if steps > length:
            values = values[:, steps - length:]
            mask = None if mask is None else mask[:, steps - length:]
        elif steps < length:
            pad = ((0, 0), (length - steps, 0), (0, 0))
            if mask is None:  # granite-tsfm: every value observed, the padding too; here NaN stays missing
                mask = np.pad(np.isfinite(values), pad, constant_values=True)
            else:
                mask = np.pad(mask, pad, constant_values=0)
            values = np.pad(values, pad, constant_values=0)
        if single:
            values, mask = values[0], None if mask is None else mask[0]
        if freq_token is not None and not config.resolution_prefix_tuning:
            raise InputError("freq_token: this checkpoint has no frequency token (resolution_prefix_tuning is off)")
        prefix = None
        if config.prefix_tokens:  # per batch element: the register tokens, then the frequency token
            batch = 1 if values.ndim == 2 else values.shape[0]
            prefix = np.empty((batch, config.prefix_tokens, config.d_model), self.dtype)
            prefix[:, :config.register_tokens] = self.weights.register_tokens
            if config.resolution_prefix_tuning:
                prefix[:, -1] = self._frequency_rows(freq_token, batch)
        return values, mask, prefix

    def _states(self, out, single):
        """granite-tsfm's ``hidden_states`` list: the encoder's, then the decoder's, each [batch, channels,
        rows, width] with a level's rows split as that level mixes them; None when not asked for."""
        if out.hidden_states is None:
            return None
        parts = [(out.hidden_states, self._encoder_states)]
        if out.decoded_states is not None:
            parts.append((out.decoded_states, self._decoder_states))
        states = []
        for arrays, factors in parts:
            for array, f in zip(arrays, factors):
                batch, channels, tokens, width = array.shape
                states.append(unbatch(array.reshape(batch, channels, tokens * f, width // f), single))
        return tuple(states)

    def _frequency_rows(self, freq_token, batch):
        if freq_token is None:
            raise InputError("freq_token: this checkpoint was trained with resolution_prefix_tuning and needs the "
                             f"data's frequency token, an integer in [0, {self.config.frequency_token_vocab_size}) per "
                             "series (granite-tsfm's get_freq_token)")
        tokens = np.asarray(freq_token)
        if tokens.ndim == 0:
            tokens = np.full(batch, tokens)
        if tokens.shape != (batch,) or tokens.dtype.kind not in "iuf" or not np.all(tokens == np.floor(tokens)):
            raise InputError(f"freq_token: expected {batch} integer(s), one per series, got {np.asarray(freq_token)!r}"[:300])
        tokens = tokens.astype(np.int64)
        vocab = self.config.frequency_token_vocab_size
        if tokens.min() < 0 or tokens.max() >= vocab:
            raise InputError(f"freq_token must be in [0, {vocab}), got {tokens.tolist()}"[:300])
        rows = np.empty((batch, self.config.d_model), self.dtype)
        forward.frequency_tokens(tokens, self.weights.frequency, rows)
        return rows


class TinyTimeMixerModel(_TinyTimeMixerBase):
    """The backbone alone: ``last_hidden_state``, ``patch_input``, ``loc``, ``scale``."""

    head = "none"

    def __call__(self, past_values, past_observed_mask=None, freq_token=None, output_hidden_states=False):
        """Encode ``past_values`` [batch, time, channels] (or one series [time, channels]): cut or padded to
        ``context_length`` as granite-tsfm does. ``past_observed_mask`` (same shape, 1 = observed) marks missing
        values; without it NaN / ±inf count as missing. ``freq_token`` [batch]: the frequency token, for a
        checkpoint with ``resolution_prefix_tuning``."""
        values, mask, prefix = self._prepare(past_values, past_observed_mask, freq_token)
        out, single = self._forward(values, mask, None, output_hidden_states, prefix)
        return TinyTimeMixerModelOutput(unbatch(out.last_hidden_state, single), self._states(out, single),
                                        unbatch(out.patch_input, single),
                                        unbatch(out.loc, single), unbatch(out.scale, single))


class _Forecasting(Forecaster):
    """What TinyTimeMixer's forecasting classes share: the channels and steps a forecast holds, DataFrame
    forecasts (frequency tokens, the exogenous future) and the multi-quantile head's levels."""

    @property
    def output_channels(self) -> list[int]:
        return self.config.output_channels

    @property
    def horizon(self) -> int:
        return self.config.horizon

    @property
    def reads_future(self) -> bool:
        return bool(self.config.enable_forecast_channel_mixing and self.config.exogenous_channel_indices)

    def output_channels_for(self, channels: int) -> list[int]:
        return self.config.forecast_channels(channels)

    def forecast(self, history, past_observed_mask=None, freq=None, pad: bool = False, quantiles=None,
                 id_columns=None, timestamp_column=None, target_columns=None, progress: bool = False, future=None):
        """Point forecasts for a DataFrame (one series, or many in a long table with ``id_columns``) or an
        array, as every family's ``forecast`` (see ``Forecaster.forecast``). A checkpoint trained with
        ``resolution_prefix_tuning`` gets the frequency token of each series' step. ``future``: for a checkpoint
        that mixes its forecasts with exogenous channels, their known values over the horizon — a DataFrame with
        those columns (the history's names; its first ``horizon`` rows are read), or for an array history an
        array [horizon, channels]."""
        if not hasattr(history, "columns") and quantiles is None:
            return self.point_forecast(self(history, past_observed_mask, future_values=future))
        if future is not None and id_columns is not None:
            raise InputError("future= with id_columns (the exogenous future of many series) is not supported yet")
        return Forecaster.forecast(self, history, past_observed_mask, freq, pad, quantiles, id_columns,
                                   timestamp_column, target_columns, progress, future=future)

    def _frame_forward(self, values, steps, columns, future=None):
        """DataFrame values' forward pass: with ``resolution_prefix_tuning``, each series' frequency token from
        its time step, found as granite-tsfm's preprocessor finds it; the exogenous channels' future from
        ``future``'s columns (one series)."""
        future_values = self._future_from_frame(future, columns)
        inputs = {"future_values": None if future_values is None else np.asarray(future_values)[None]}
        if not self.config.resolution_prefix_tuning:
            return self(values, **inputs)
        if any(step is None for step in steps):
            raise InputError("this checkpoint needs the data's frequency token (resolution_prefix_tuning): give the "
                             "history timestamps (a DatetimeIndex or a time column), or call the model on arrays "
                             "with freq_token=")
        return self(values, freq_token=[frequency_token(step) for step in steps], **inputs)

    def _future_from_frame(self, future, columns):
        """[horizon, channels] with the exogenous columns of ``future`` (a DataFrame or array), or None."""
        if future is None or not self.reads_future:
            if future is not None:
                raise InputError("future: this checkpoint reads no future values (it has no exogenous channels)")
            return None
        exogenous = self.config.exogenous_channel_indices
        if not hasattr(future, "columns"):
            return future
        names = [columns[c] for c in exogenous]
        missing = [name for name in names if name not in future.columns]
        if missing:
            raise InputError(f"future: expected the exogenous column(s) {names}, missing {missing}; it has "
                             f"{list(future.columns)}"[:400])
        if len(future) < self.horizon:
            raise InputError(f"future: expected at least {self.horizon} rows (the horizon), got {len(future)}")
        array = np.zeros((self.horizon, len(columns)))
        for index, name in zip(exogenous, names):
            column = future[name].iloc[:self.horizon]
            if not np.issubdtype(column.dtype, np.number) or column.dtype.kind in "bc":
                raise InputError(f"future: column {name!r} must hold real numbers, got {column.dtype}")
            array[:, index] = column.to_numpy(dtype=np.float64)
        return array

    def _require_quantiles(self, levels) -> None:
        self._quantile_indices(levels)

    def _quantile_indices(self, levels) -> list[int]:
        """Where each of ``levels`` is among the multi-quantile head's levels; InputError naming those it has,
        ConfigError without that head."""
        if not self.config.multi_quantile_head:
            raise ConfigError("quantiles: this checkpoint has a point head and no multi-quantile head "
                              "(multi_quantile_head), so it forecasts no quantiles")
        available = self.config.quantiles
        indices = []
        for level in quantile_levels(levels):
            matches = [i for i, q in enumerate(available) if abs(q - level) < 1e-9]
            if not matches:
                raise InputError(f"quantiles: this checkpoint's multi-quantile head forecasts the levels {available}, "
                                 f"not {float(level)!r}")
            indices.append(matches[0])
        return indices

    def quantiles(self, output, levels) -> np.ndarray:
        """[len(levels), *forecast shape]: the multi-quantile head's forecasts at ``levels`` (each one of the
        levels it was trained for, ``config.quantile_levels``), in data units. Without that head: ConfigError."""
        return np.moveaxis(output.quantile_outputs[..., self._quantile_indices(levels), :, :], -3, 0)


class TinyTimeMixerForPrediction(_Forecasting, _TinyTimeMixerBase):
    """Forecasts the channels ``prediction_channel_indices`` names (all by default), ``prediction_filter_length``
    (else ``prediction_length``) steps: ``prediction_outputs`` [batch, horizon, channels]."""

    head = "prediction"

    def __call__(self, past_values, past_observed_mask=None, freq_token=None, output_hidden_states=False,
                 future_values=None, static_categorical_values=None):
        """Forecast from ``past_values`` [batch, time, channels] (or one series), any length: cut or padded to
        ``context_length`` as granite-tsfm does. ``past_observed_mask`` (same shape, 1 = observed) marks
        missing values; without it NaN / ±inf count as missing. ``freq_token`` [batch]: the frequency token,
        for a checkpoint with ``resolution_prefix_tuning`` (the ``-ft-`` revisions). ``future_values``
        [batch, horizon, channels]: the known future of the exogenous channels (``exogenous_channel_indices``)
        that forecast channel mixing reads; other channels' values there are not used.
        ``static_categorical_values`` [batch, variables]: each series' category of every static categorical
        variable (``categorical_vocab_size_list``), for a checkpoint trained with them."""
        values, mask, prefix = self._prepare(past_values, past_observed_mask, freq_token)
        future = self._future(future_values, values)
        static_rows = self._static_rows(static_categorical_values, values)
        if static_rows is not None and output_hidden_states:
            raise InputError("output_hidden_states with static categorical inputs is not supported by rustml_nb yet")
        out, single = self._forward(values, mask, None, output_hidden_states, prefix, static_rows)
        channels = self.output_channels_for(values.shape[-1])
        forecast = np.ascontiguousarray(out.head[:, 0, :self.config.horizon][..., channels])
        if self.weights.channel_mixing is not None:  # on forecasts still in scaled units
            past = np.nan_to_num(values if values.ndim == 3 else values[None], nan=0.0, posinf=0.0, neginf=0.0)
            forecast = forward.mix_forecast_channels(forecast, past.astype(self.dtype, copy=False), future,
                                                     self.weights.channel_mixing, self.config, self._fcm_switches,
                                                     self._fcm_heads, self._gate_kind)
        decoded = out.decoded if out.decoded is not None else out.last_hidden_state
        loc, scale = out.loc[..., channels], out.scale[..., channels]
        quantiles = None
        if self.weights.quantile_head is not None:  # around the scaled forecasts; the median is the forecast
            quantiles = forward.multi_quantile(forecast, decoded, self.config, self.weights.quantile_head)
            forecast = quantiles[:, quantiles.shape[1] // 2]
            quantiles = quantiles * scale[:, None] + loc[:, None]
        if self._scaled_head:
            forecast = forecast * scale + loc
        return TinyTimeMixerForPredictionOutput(
            unbatch(forecast, single), unbatch(out.last_hidden_state, single), unbatch(decoded, single),
            self._states(out, single), unbatch(np.ascontiguousarray(loc), single),
            unbatch(np.ascontiguousarray(scale), single), values,
            None if quantiles is None else unbatch(np.ascontiguousarray(quantiles), single))

    @property
    def _scaled_head(self) -> bool:
        """Whether the forecast head's output stays in scaled units, for the steps after it (forecast channel
        mixing, the multi-quantile head), and is scaled back after them."""
        return self.weights.channel_mixing is not None or self.weights.quantile_head is not None

    def _head_output(self, batch, channels, dtype):
        return np.empty((batch, 1, self.config.prediction_length, channels), dtype)

    def _static_rows(self, static_categorical_values, values):
        """[batch, variables, decoder_d_model]: each variable's embedding row of the given categories; None for
        a checkpoint without static categorical inputs."""
        vocab = self.config.categorical_vocab_size_list if self.config.num_categorical else None
        if not vocab:
            if static_categorical_values is not None:
                raise InputError("static_categorical_values: this checkpoint has no static categorical inputs")
            return None
        batch = values.shape[0] if values.ndim == 3 else 1
        if static_categorical_values is None:
            raise InputError(f"static_categorical_values: this checkpoint needs each series' category of its "
                             f"{len(vocab)} static categorical variable(s) (vocabulary sizes {vocab}): "
                             f"[batch, {len(vocab)}] integers")
        categories = as_array("static_categorical_values", static_categorical_values)
        if values.ndim == 2 and categories.ndim == 1:
            categories = categories[None]
        if (categories.shape != (batch, len(vocab)) or categories.dtype.kind not in "iuf"
                or not np.all(categories == np.floor(categories))):
            raise InputError(f"static_categorical_values: expected [{batch}, {len(vocab)}] integers, got "
                             f"{list(categories.shape)} {categories.dtype}")
        categories = categories.astype(np.int64)
        for variable, size in enumerate(vocab):
            column = categories[:, variable]
            if column.min() < 0 or column.max() >= size:
                raise InputError(f"static_categorical_values: variable {variable} takes categories in [0, {size}), "
                                 f"got {sorted(set(column.tolist()))}"[:300])
        return np.stack([embedding[categories[:, variable]] for variable, embedding in
                         enumerate(self.weights.categorical)], axis=1)

    def _future(self, future_values, values):
        """future_values checked and cut to the horizon, in the model's dtype; None when nothing reads it."""
        if not self.reads_future:
            return None
        exogenous = self.config.exogenous_channel_indices
        if future_values is None:
            raise InputError(f"future_values: this checkpoint mixes its forecasts with the known future of its "
                             f"exogenous channels {exogenous}: pass future_values [batch, {self.config.horizon}, "
                             "channels] (other channels' values there are not used)")
        future = as_array("future_values", future_values)
        expected = (self.config.horizon, values.shape[-1])
        if (future.ndim != values.ndim or future.shape[:-2] != values.shape[:-2] or future.shape[-2] < expected[0]
                or future.shape[-1] != expected[1] or future.dtype.kind not in "fiu"):
            raise InputError(f"future_values: expected [{'batch, ' if values.ndim == 3 else ''}at least {expected[0]}, "
                             f"{expected[1]}] real numbers like past_values, got {list(future.shape)} {future.dtype}")
        future = future if future.ndim == 3 else future[None]
        future = future[:, :expected[0]].astype(self.dtype)
        if not np.isfinite(future[..., exogenous]).all():
            raise InputError("future_values: the exogenous channels' future must be known (finite)")
        return future

    def _series_head(self, part, first_series, last_series):
        """Each series' rows flattened ([tokens * width]) through the forecast Linear, then scaled back:
        forecast * scale + loc, into part.head [batch, 1, prediction_length, channels]."""
        width = self.decoder_width or self.config.d_model
        rows = part.decoded if self.decoder_width else part.stream
        features = rows.reshape(-1, self.tokens * width)[first_series:last_series]
        loc, scale = part.loc, part.scale
        if self._scaled_head:  # forecast channel mixing and the multi-quantile head read scaled forecasts
            loc, scale = np.zeros_like(loc), np.ones_like(scale)
        heads.prediction_head(features, first_series, loc, scale, self.weights.head_weight,
                              self.weights.head_bias, heads.DIST_NONE, 0.0, part.head)


MODEL_CLASSES = (TinyTimeMixerModel, TinyTimeMixerForPrediction)  # and the decomposed one (decomposed.py)


def compile_kernels(dtype: str = "float32") -> None:
    """Compile, or load from the cache, every TinyTimeMixer kernel for ``dtype``: tiny models with adaptive
    levels, the frequency token and a decoder, one with forecast channel mixing (its mixer and gate), one
    with self-attention, the base norm, multi-scale patches, static categorical inputs and the multi-quantile
    head, and a decomposed model over the last, each run once."""
    rng = np.random.default_rng(0)
    for self_attn in (False, True):
        options = (dict(decoder_mode="mix_channel", categorical_vocab_size_list=[2], multi_quantile_head=True,
                        multi_scale=True, decoder_raw_residual=False) if self_attn else
                   dict(enable_forecast_channel_mixing=True, exogenous_channel_indices=[1], fcm_context_length=1,
                        fcm_use_mixer=True, prediction_channel_indices=[0, 2], decoder_raw_residual=True))
        config = TinyTimeMixerConfig(num_input_channels=3, context_length=16, patch_length=4, patch_stride=4,
                                     d_model=16, decoder_d_model=8, num_layers=1, decoder_num_layers=1,
                                     adaptive_patching_levels=2, resolution_prefix_tuning=True,
                                     enable_base_norm_always=self_attn, self_attn=self_attn, self_attn_heads=2,
                                     prediction_length=2, architectures=["TinyTimeMixerForPrediction"], **options)
        mapped = {name: np.abs(rng.normal(size=shape)) + 0.5
                  for name, shape in expected_shapes(config, "prediction").items()}
        model = TinyTimeMixerForPrediction(
            config, load_tinytimemixer_weights(mapped, config, "prediction", model_dtype(dtype).type), dtype)
        inputs = (dict(static_categorical_values=[[1]]) if self_attn else
                  dict(future_values=np.zeros((1, config.prediction_length, config.num_input_channels), dtype)))
        model(np.zeros((1, config.context_length, config.num_input_channels), dtype), freq_token=[0], **inputs)
    # a decomposed model scales whole series itself (the series kernels, called on their own)
    from .decomposed import Forecasters, TinyTimeMixerForDecomposedPrediction

    decomposed = TinyTimeMixerForDecomposedPrediction(dataclasses.replace(config, scaling="mean"),
                                                      Forecasters(model, model), dtype)
    decomposed(np.zeros((1, config.context_length, config.num_input_channels), dtype), freq_token=[0], **inputs)
