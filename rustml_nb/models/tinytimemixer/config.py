"""``TinyTimeMixerConfig``: every field granite-tsfm's ``TinyTimeMixerConfig`` (tsfm_public 0.3.11) has, with
its types and defaults, parsed from ``config.json`` and checked for values rustml_nb cannot run."""

from __future__ import annotations

import dataclasses

from ...errors import ConfigError
from ..config import FamilyConfig

MODES = ("common_channel", "mix_channel")
GATE_MODES = ("softmax", "sigmoid", "glu", "group_sigmoid")
POSITIONAL_ENCODINGS = ("sincos", "random")
POINT_LOSSES = ("mse", "mae", "pinball", "huber", None)
QUANTILE_LEVELS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
# The fields a decomposed model's trend forecaster takes from its trend_* counterparts when those are set.
TREND_FIELDS = ("patch_length", "patch_stride", "d_model", "decoder_d_model", "num_layers", "decoder_num_layers",
                "register_tokens", "fft_length", "multi_scale", "adaptive_patching_levels")


@dataclasses.dataclass
class TinyTimeMixerConfig(FamilyConfig):
    """The configuration of a TinyTimeMixer checkpoint; field names, types and defaults are granite-tsfm's."""

    context_length: int = 64
    patch_length: int = 8
    num_input_channels: int = 1
    prediction_length: int = 16
    patch_stride: int = 8
    prediction_channel_indices: list | None = None
    exogenous_channel_indices: list | None = None
    d_model: int = 16
    expansion_factor: int = 2
    num_layers: int = 3
    dropout: float | int = 0.2
    mode: str = "common_channel"
    gated_attn: bool = True
    norm_mlp: str = "LayerNorm"
    self_attn: bool = False
    self_attn_heads: int = 1
    use_positional_encoding: bool = False
    positional_encoding_type: str = "sincos"
    scaling: str | bool | None = "std"
    loss: str | None = "mse"
    init_std: float = 0.02
    post_init: bool = False
    norm_eps: float = 1e-5
    adaptive_patching_levels: int = 0
    resolution_prefix_tuning: bool = False
    frequency_token_vocab_size: int = 5
    head_dropout: float | int = 0.2
    distribution_output: str = "student_t"
    num_parallel_samples: int = 100
    decoder_num_layers: int = 8
    decoder_d_model: int = 8
    decoder_adaptive_patching_levels: int = 0
    decoder_raw_residual: bool = False
    decoder_mode: str = "common_channel"
    use_decoder: bool = True
    enable_forecast_channel_mixing: bool = False
    fcm_gated_attn: bool = True
    fcm_context_length: int = 1
    fcm_use_mixer: bool = False
    fcm_mix_layers: int = 2
    fcm_prepend_past: bool = True
    fcm_prepend_past_offset: int | None = None
    categorical_vocab_size_list: list | None = None
    prediction_filter_length: int | None = None
    init_linear: str = "pytorch"
    init_embed: str = "pytorch"
    quantile: float = 0.5
    huber_delta: float | int = 1
    mask_value: int = 0
    multi_scale: bool = False
    register_tokens: int = 0
    fft_length: int = 0
    use_fft_embedding: bool = True
    multi_quantile_head: bool = False
    point_extra_weight: int | float | None = 0
    residual_context_length: int | None = None
    # TinyTimeMixerForDecomposedPrediction's trend forecaster: each, when set, replaces its field (TREND_FIELDS);
    # trend_head_d_model is stored but unused (granite-tsfm's head reads decoder_d_model / d_model)
    trend_patch_length: int | None = None
    trend_patch_stride: int | None = None
    trend_d_model: int | None = None
    trend_decoder_d_model: int | None = None
    trend_num_layers: int | None = None
    trend_decoder_num_layers: int | None = None
    trend_register_tokens: int | None = None
    trend_fft_length: int | None = None
    trend_multi_scale: bool | None = None
    trend_adaptive_patching_levels: int | None = None
    trend_head_d_model: int | None = None
    # its training losses' weights and kind (not used in a forward pass)
    trend_loss_weight: float | int | None = 1
    residual_loss_weight: float | int | None = 1
    joint_loss_weight: float | int | None = 1
    forecast_loss_type: str | None = "joint"
    combine_quantiles_via_variance: bool = False
    penalize_large_width_ratio: float | int = 0.0
    width_penalty_mode: str = "boundary"
    decompose: bool = False
    light_mode: bool = False
    quantile_levels: list = dataclasses.field(default_factory=lambda: list(QUANTILE_LEVELS))
    enable_base_norm_always: bool = False
    # the multi-quantile head's (multi_quantile_head)
    mq_hidden: int = 8
    mq_kernel_size: int = 3
    mq_eps: float = 1e-6
    mq_use_decoder_pool: bool = False
    mq_q50_type: str = "median"
    mq_cond_path: str = "pool"
    mq_cond_mode: str = "add"
    mq_decoder_d_model: int = 8
    mq_use_positional: bool = False
    # Set by granite-tsfm when it builds a model, and saved with it.
    masked_context_length: int | None = None
    # granite-tsfm reads these with getattr (not constructor arguments): its gate's kind and groups.
    gate_mode: str = "softmax"
    gate_groups: int = 8
    use_register_context_gating: bool = False
    # ... and its FFT tokens' options (fft_length > 0)
    get_one_freq_emb: bool = False
    fft_ignore_dc: bool = False
    fft_d_freq_min: int = 4
    fft_d_freq_max: int = 64
    # From transformers' PretrainedConfig: which class wrote the checkpoint.
    architectures: list[str] | None = None

    MODEL_TYPE = "tinytimemixer"

    # --- derived values -------------------------------------------------------------------------
    @property
    def sequence_length(self) -> int:
        """The input length the model runs on: longer inputs are cut to their last steps, shorter ones padded."""
        return self.masked_context_length if self.masked_context_length is not None else self.context_length

    @property
    def num_patches(self) -> int:
        """Patches per channel, as granite-tsfm's patchify computes them (without the frequency token)."""
        return (max(self.sequence_length, self.patch_length) - self.patch_length) // self.patch_stride + 1

    @property
    def scale_patches(self) -> list[int]:
        """Patches each scale gives, coarsest first (their order in the tokens): multi_scale averages the
        patched input over 2**i steps for every i that leaves a patch; else one scale, the patches."""
        if not self.multi_scale:
            return [self.num_patches]
        steps, counts = self.num_patches * self.patch_length, []
        while steps // 2 ** len(counts) >= self.patch_length:
            counts.append(steps // 2 ** len(counts) // self.patch_length)
        return counts[::-1]

    @property
    def fft_bins(self) -> int:
        """Frequency bins of the FFT tokens' spectrum (rfft of context_length steps)."""
        return self.context_length // 2 + 1

    @property
    def fft_selected(self) -> int:
        """Frequency bins the FFT tokens take from each spectrum: fft_length, at most every bin (granite-tsfm's
        fft_k)."""
        return min(self.fft_length, self.fft_bins)

    @property
    def fft_tokens(self) -> int:
        """Rows the FFT tokens add: one per selected frequency, or one for all (get_one_freq_emb); 0 without."""
        if self.fft_length <= 0:
            return 0
        return 1 if self.get_one_freq_emb else self.fft_selected

    @property
    def fft_width(self) -> int:
        """Width of each selected frequency's embedding: d_model, or with get_one_freq_emb d_model // k within
        [fft_d_freq_min, fft_d_freq_max] (granite-tsfm's d_freq)."""
        if not self.get_one_freq_emb:
            return self.d_model
        return max(self.fft_d_freq_min, min(self.fft_d_freq_max, max(1, self.d_model // max(1, self.fft_selected))))

    @property
    def prefix_tokens(self) -> int:
        """Rows in front of each series' patches that its batch element shares: the register tokens, then the
        frequency token."""
        return self.register_tokens + (1 if self.resolution_prefix_tuning else 0)

    @property
    def lead_tokens(self) -> int:
        """Rows in front of the patches: the FFT tokens, then the register tokens, then the frequency token."""
        return self.fft_tokens + self.prefix_tokens

    @property
    def num_tokens(self) -> int:
        """Rows per series in the mixers: the lead tokens, then every scale's patches."""
        return self.lead_tokens + sum(self.scale_patches)

    @property
    def base_norm(self) -> bool:
        """A LayerNorm over each series' tokens x d_model before the mixers (r3: always with multi_scale)."""
        return bool(self.enable_base_norm_always or self.multi_scale)

    @property
    def scaler(self) -> str:
        """``"mean"``, ``"std"`` or ``"none"``; ``True`` means std, as in granite-tsfm."""
        if self.scaling == "mean":
            return "mean"
        if self.scaling == "std" or self.scaling is True:
            return "std"
        return "none"

    @property
    def batch_norm(self) -> bool:
        return "batch" in self.norm_mlp.lower()

    @property
    def head_d_model(self) -> int:
        return self.decoder_d_model if self.use_decoder else self.d_model

    @property
    def gate_outputs(self) -> int:
        """The gates' Linear outputs per gated value: 2 for the GLU gate (content and gate), else 1."""
        return 2 if self.gate_mode == "glu" else 1

    @property
    def quantiles(self) -> list[float]:
        """The multi-quantile head's levels, ascending (granite-tsfm sorts them)."""
        return sorted(float(q) for q in self.quantile_levels)

    @property
    def horizon(self) -> int:
        """Steps a forecast holds: ``prediction_filter_length`` when set, else ``prediction_length``."""
        return self.prediction_filter_length if self.prediction_filter_length is not None else self.prediction_length

    @property
    def output_channels(self) -> list[int]:
        """The channels a forecast of ``num_input_channels`` channels holds (see ``forecast_channels``)."""
        return self.forecast_channels(self.num_input_channels)

    def forecast_channels(self, channels: int) -> list[int]:
        """The channels a forecast of an input of ``channels`` channels holds: ``prediction_channel_indices``
        sorted; with exogenous channels and no prediction channels named, every other channel (as granite-tsfm
        fills them in); else all."""
        if self.prediction_channel_indices is not None:
            return sorted(self.prediction_channel_indices)
        if self.exogenous_channel_indices is not None:
            return sorted(set(range(channels)) - set(self.exogenous_channel_indices))
        return list(range(channels))

    @property
    def channel_independent(self) -> bool:
        """Whether channels never meet (common_channel encoder and decoder): then, as in granite-tsfm, an
        input may have any number of channels, whatever ``num_input_channels`` says."""
        return (self.mode == "common_channel" and (not self.use_decoder or self.decoder_mode == "common_channel")
                and not self.enable_forecast_channel_mixing)

    @property
    def num_categorical(self) -> int:
        """Static categorical variables the decoder reads (each an embedding row that joins its channels)."""
        return len(self.categorical_vocab_size_list or ()) if self.use_decoder else 0

    @property
    def mixed_channels(self) -> list[int]:
        """The channels forecast channel mixing reads: the forecast ones, then the exogenous ones."""
        return self.output_channels + list(self.exogenous_channel_indices or [])

    @property
    def fcm_features(self) -> int:
        """Features per channel and forecast step in forecast channel mixing: its window of
        2 * fcm_context_length + 1 steps, embedded to twice that with the mixer."""
        window = 2 * self.fcm_context_length + 1
        return 2 * window if self.fcm_use_mixer else window

    def trend_config(self) -> "TinyTimeMixerConfig":
        """The trend forecaster's config in TinyTimeMixerForDecomposedPrediction: this one with each trend_*
        field that is set, and no scaling (the decomposed model scales)."""
        changes = {field: getattr(self, f"trend_{field}") for field in TREND_FIELDS
                   if getattr(self, f"trend_{field}") is not None}
        return self._forecaster_config("trend", scaling=None, **changes)

    def residual_config(self) -> "TinyTimeMixerConfig":
        """The residual forecaster's config: this one with residual_context_length as its context, unscaled."""
        changes = {} if self.residual_context_length is None else {"context_length": self.residual_context_length}
        return self._forecaster_config("residual", scaling=None, **changes)

    def _forecaster_config(self, which: str, **changes) -> "TinyTimeMixerConfig":
        try:
            return dataclasses.replace(self, architectures=["TinyTimeMixerForPrediction"], **changes)
        except ConfigError as error:
            raise ConfigError(f"the {which} forecaster of a decomposed model: {error}") from None

    def check_multi_quantile_head(self) -> None:
        """What granite-tsfm's MultiQuantileHead accepts and runs."""
        levels = self.quantiles
        below = sum(q < 0.5 for q in levels)
        if len(levels) % 2 != 1 or not any(abs(q - 0.5) < 1e-12 for q in levels) or below != len(levels) // 2:
            raise ConfigError(f"quantile_levels must be an odd number of levels around 0.5, as many below as above "
                              f"(granite-tsfm's multi-quantile head), got {self.quantile_levels!r}")
        self.check_positive("mq_hidden", "mq_kernel_size", "mq_decoder_d_model")
        if self.horizon < 2:
            raise ConfigError("multi_quantile_head with a horizon of 1 step: granite-tsfm's instance norm over the "
                              "horizon needs 2 steps and fails")
        if self.mq_kernel_size % 2 == 0:
            raise ConfigError(f"mq_kernel_size ({self.mq_kernel_size}) must be odd: granite-tsfm's head changes the "
                              "horizon's length otherwise and fails")
        self.check_choice("mq_cond_path", ("pool", "flatten"))
        self.check_choice("mq_cond_mode", ("add", "concat"))
        if self.mq_use_decoder_pool:
            if self.head_d_model != self.decoder_d_model:
                raise ConfigError("mq_use_decoder_pool without a decoder: granite-tsfm's head reads decoder_d_model "
                                  f"({self.decoder_d_model}) features where the backbone gives d_model "
                                  f"({self.d_model}), and fails")
            if len(self.output_channels) != self.num_input_channels:
                raise ConfigError("mq_use_decoder_pool with forecasts of fewer channels than the input "
                                  "(prediction_channel_indices or exogenous channels): granite-tsfm's head pairs "
                                  "each forecast channel with a decoder channel and fails")

    def level_factors(self, levels: int, d_model: int) -> list[int]:
        """Each adaptive-patching level's factor, coarsest first, as TinyTimeMixerAdaptivePatchingBlock sets
        it: 2**level, or 1 where d_model // 2**level would be 4 or less; no levels: [1] (one plain stack)."""
        if levels <= 0:
            return [1]
        return [2 ** level if d_model // 2 ** level > 4 else 1 for level in reversed(range(levels))]

    # --- validation -----------------------------------------------------------------------------
    def validate(self) -> None:
        self.check_positive("num_input_channels", "context_length", "patch_length", "patch_stride", "d_model",
                            "expansion_factor", "self_attn_heads", "prediction_length", "decoder_d_model",
                            "frequency_token_vocab_size")
        self.check_positive("num_layers", "decoder_num_layers", minimum=0)
        if self.patch_length != self.patch_stride:
            raise ConfigError(f"patch_length ({self.patch_length}) and patch_stride ({self.patch_stride}) must be "
                              "equal, as granite-tsfm requires")
        if self.sequence_length <= self.patch_length:
            raise ConfigError(f"context_length ({self.sequence_length}) must be greater than patch_length "
                              f"({self.patch_length})")
        self.check_choice("mode", MODES)
        self.check_choice("decoder_mode", MODES)
        if self.use_positional_encoding:
            self.check_choice("positional_encoding_type", POSITIONAL_ENCODINGS)
        if self.loss == "nll":
            raise ConfigError("loss 'nll' (a distribution head): granite-tsfm 0.3.11 refuses to run it")
        self.check_choice("loss", POINT_LOSSES)
        self.check_positive("register_tokens", "fft_length", minimum=0)
        if self.multi_scale:
            if self.masked_context_length is not None:
                raise ConfigError("multi_scale with masked_context_length: granite-tsfm refuses it")
        if self.fft_length > self.fft_bins and not self.get_one_freq_emb:
            raise ConfigError(f"fft_length ({self.fft_length}) is more than the {self.fft_bins} frequency bins of "
                              f"context_length {self.context_length}: granite-tsfm builds layers its forward cannot "
                              "run")
        if self.fft_length and self.masked_context_length is not None:
            raise ConfigError("fft_length with masked_context_length is not supported by rustml_nb yet")
        if self.use_decoder and self.decoder_raw_residual and (self.num_tokens - self.num_patches
                                                               - (1 if self.resolution_prefix_tuning else 0)):
            raise ConfigError("decoder_raw_residual with register tokens, FFT tokens or multi-scale patches: "
                              "granite-tsfm adds the raw patches' embedding to more tokens than there are patches, "
                              "which its forward cannot run")
        if self.categorical_vocab_size_list is not None:
            vocab = self.categorical_vocab_size_list
            if not vocab or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in vocab):
                raise ConfigError(f"categorical_vocab_size_list must be positive integers, got {vocab!r}")
            if self.use_decoder and self.decoder_mode != "mix_channel":
                raise ConfigError("static categorical inputs need decoder_mode 'mix_channel' (their embeddings join "
                                  "the decoder's channel mixing), as granite-tsfm requires")
        if self.enable_forecast_channel_mixing:
            if self.fcm_context_length < 0 or self.fcm_mix_layers < 0:
                raise ConfigError("fcm_context_length and fcm_mix_layers must be non-negative")
            if self.fcm_context_length > 0 and self.horizon < 2:
                raise ConfigError("forecast channel mixing with fcm_context_length > 0 needs a horizon "
                                  "(prediction_filter_length or prediction_length) of at least 2, as granite-tsfm "
                                  "requires")
            if self.fcm_use_mixer and self.fcm_context_length == 0:
                raise ConfigError("fcm_use_mixer with fcm_context_length 0: granite-tsfm builds a head its forward "
                                  "cannot run (its Linear expects the mixer's features, which it then skips)")
            if self.fcm_prepend_past and self.fcm_context_length + (self.fcm_prepend_past_offset or 0) > self.sequence_length:
                raise ConfigError("fcm_context_length + fcm_prepend_past_offset must fit in the context")
        self.check_choice("gate_mode", GATE_MODES)
        if self.multi_quantile_head:
            self.check_multi_quantile_head()
        if self.use_register_context_gating:
            raise ConfigError("use_register_context_gating: granite-tsfm 0.3.11 cannot run it (its gates need a "
                              "context tensor that none of its blocks passes)")
        if self.prediction_filter_length is not None and not 0 < self.prediction_filter_length <= self.prediction_length:
            raise ConfigError(f"prediction_filter_length must be in [1, prediction_length = {self.prediction_length}], "
                              f"got {self.prediction_filter_length}")
        for name in ("prediction_channel_indices", "exogenous_channel_indices"):
            indices = getattr(self, name)
            if indices is not None and (
                    not indices or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices)
                    or len(set(indices)) != len(indices) or not all(0 <= i < self.num_input_channels for i in indices)):
                raise ConfigError(f"{name} must be distinct channel numbers in [0, {self.num_input_channels}), "
                                  f"got {indices!r}")
        for levels, d_model, what in ((self.adaptive_patching_levels, self.d_model, "d_model"),
                                      (self.decoder_adaptive_patching_levels, self.decoder_d_model, "decoder_d_model")):
            for factor in self.level_factors(levels, d_model):
                if d_model % factor:
                    raise ConfigError(f"{what} ({d_model}) must be divisible by 2**level for every adaptive "
                                      f"patching level, as granite-tsfm requires")
        if self.self_attn:
            for levels, d_model in ((self.adaptive_patching_levels, self.d_model),
                                    (self.decoder_adaptive_patching_levels, self.decoder_d_model)):
                for factor in self.level_factors(levels, d_model):
                    if (d_model // factor) % self.self_attn_heads:
                        raise ConfigError(f"every level's width ({d_model // factor}) must be divisible by "
                                          f"self_attn_heads ({self.self_attn_heads})")
        self.check_norm_eps()
