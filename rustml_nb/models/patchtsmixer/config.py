"""``PatchTSMixerConfig``: every field transformers' ``PatchTSMixerConfig`` has, with its types and defaults,
parsed from ``config.json`` and checked for values PatchTSMixer cannot run with."""

from __future__ import annotations

import dataclasses

from ...errors import ConfigError
from ..config import DISTRIBUTIONS, FamilyConfig

MODES = ("common_channel", "mix_channel")
POSITIONAL_ENCODINGS = ("sincos", "random")
HEAD_AGGREGATIONS = (None, "use_last", "max_pool", "avg_pool")


@dataclasses.dataclass
class PatchTSMixerConfig(FamilyConfig):
    """The configuration of a PatchTSMixer checkpoint; field names, types and defaults are transformers'."""

    context_length: int = 32
    patch_length: int = 8
    num_input_channels: int = 1
    patch_stride: int = 8
    num_parallel_samples: int = 100
    d_model: int = 8
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
    loss: str = "mse"
    init_std: float = 0.02
    norm_eps: float = 1e-5
    mask_type: str = "random"
    random_mask_ratio: float = 0.5
    num_forecast_mask_patches: list[int] | tuple[int, ...] | int | None = dataclasses.field(default_factory=lambda: [2])
    mask_value: int = 0
    masked_loss: bool = True
    channel_consistent_masking: bool = True
    unmasked_channel_indices: list[int] | None = None
    head_dropout: float | int = 0.2
    distribution_output: str = "student_t"
    prediction_length: int = 16
    prediction_channel_indices: list | None = None
    num_targets: int = 3
    output_range: list | None = None
    head_aggregation: str | None = "max_pool"
    # From transformers' PretrainedConfig: which class wrote the checkpoint.
    architectures: list[str] | None = None

    MODEL_TYPE = "patchtsmixer"

    # --- derived values -------------------------------------------------------------------------
    @property
    def scaler(self) -> str:
        """``"mean"``, ``"std"`` or ``"none"``: PatchTSMixerModel maps ``True`` to std (PatchTST to mean)."""
        if self.scaling == "mean":
            return "mean"
        if self.scaling == "std" or self.scaling is True:
            return "std"
        return "none"

    @property
    def injects_scale(self) -> bool:
        """Classification and regression feed the scaler's loc and scale back in (InjectScalerStatistics4D)."""
        return self.scaling in ("std", "mean", True)

    @property
    def has_distribution_head(self) -> bool:
        """transformers builds a distribution head whenever ``loss`` is not ``"mse"``."""
        return self.loss != "mse"

    @property
    def batch_norm(self) -> bool:
        """BatchNorm when ``norm_mlp`` names it (any case), LayerNorm otherwise, as transformers decides."""
        return "batch" in self.norm_mlp.lower()

    @property
    def head_dim(self) -> int:
        return self.d_model // self.self_attn_heads

    @property
    def output_channels(self) -> list[int]:
        """The channels a forecast holds: ``prediction_channel_indices`` sorted, else all."""
        if self.prediction_channel_indices is None:
            return list(range(self.num_input_channels))
        return sorted(self.prediction_channel_indices)

    # --- validation -----------------------------------------------------------------------------
    def validate(self) -> None:
        self.check_patching()
        self.check_positive("d_model", "expansion_factor", "self_attn_heads", "prediction_length", "num_targets")
        self.check_positive("num_layers", minimum=0)
        self.check_choice("mode", MODES)
        self.check_choice("head_aggregation", HEAD_AGGREGATIONS)
        if self.use_positional_encoding:
            self.check_choice("positional_encoding_type", POSITIONAL_ENCODINGS)
        if self.self_attn and self.d_model % self.self_attn_heads:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by self_attn_heads ({self.self_attn_heads})")
        if self.has_distribution_head:
            self.check_choice("distribution_output", DISTRIBUTIONS)
        if self.prediction_channel_indices is not None:
            indices = self.prediction_channel_indices
            if (not indices or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices)
                    or len(set(indices)) != len(indices)
                    or not all(0 <= i < self.num_input_channels for i in indices)):
                raise ConfigError(f"prediction_channel_indices must be distinct channel numbers in "
                                  f"[0, {self.num_input_channels}), got {indices!r}")
        self.check_norm_eps()
        self.check_output_range()
