"""``PatchTSTConfig``: every field transformers' ``PatchTSTConfig`` has, with its defaults, parsed from
``config.json`` and checked for values PatchTST cannot run with."""

from __future__ import annotations

import dataclasses

from ...errors import ConfigError
from ..config import DISTRIBUTION_PARAMETERS, DISTRIBUTIONS, FamilyConfig  # noqa: F401  (re-exported)

NORM_TYPES = ("batchnorm", "layernorm")
ACTIVATIONS = ("gelu", "relu")
POSITIONAL_ENCODINGS = ("sincos", "random")
POOLING_TYPES = ("mean", "max", None)


@dataclasses.dataclass
class PatchTSTConfig(FamilyConfig):
    """The configuration of a PatchTST checkpoint; field names, types and defaults are transformers'."""

    num_input_channels: int = 1
    context_length: int = 32
    distribution_output: str = "student_t"
    loss: str | None = "mse"
    patch_length: int = 1
    patch_stride: int = 1
    num_hidden_layers: int = 3
    d_model: int = 128
    num_attention_heads: int = 4
    share_embedding: bool = True
    channel_attention: bool = False
    ffn_dim: int = 512
    norm_type: str = "batchnorm"
    norm_eps: float = 1e-05
    attention_dropout: float | int = 0.0
    positional_dropout: float | int = 0.0
    path_dropout: float | int = 0.0
    ff_dropout: float | int = 0.0
    bias: bool = True
    activation_function: str = "gelu"
    pre_norm: bool = True
    positional_encoding_type: str = "sincos"
    use_cls_token: bool = False
    init_std: float = 0.02
    share_projection: bool = True
    scaling: str | bool | None = "std"
    do_mask_input: bool | None = None
    mask_type: str = "random"
    random_mask_ratio: float = 0.5
    num_forecast_mask_patches: list[int] | tuple[int, ...] | int | None = dataclasses.field(default_factory=lambda: [2])
    channel_consistent_masking: bool | None = False
    unmasked_channel_indices: list[int] | None = None
    mask_value: int = 0
    pooling_type: str | None = "mean"
    head_dropout: float | int = 0.0
    prediction_length: int = 24
    num_targets: int = 1
    output_range: list | None = None
    num_parallel_samples: int = 100
    # From transformers' PretrainedConfig: which class wrote the checkpoint.
    architectures: list[str] | None = None

    MODEL_TYPE = "patchtst"

    @property
    def scaler(self) -> str:
        """``"mean"``, ``"std"`` or ``"none"``: transformers maps ``True`` to mean and anything unknown to none."""
        if self.scaling == "mean" or self.scaling is True:
            return "mean"
        if self.scaling == "std":
            return "std"
        return "none"

    @property
    def has_distribution_head(self) -> bool:
        """transformers builds a distribution head whenever ``loss`` is not ``"mse"``."""
        return self.loss != "mse"

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_attention_heads

    # --- validation -----------------------------------------------------------------------------
    def validate(self) -> None:
        self.check_patching()
        self.check_positive("d_model", "num_attention_heads", "ffn_dim", "prediction_length", "num_targets")
        self.check_positive("num_hidden_layers", minimum=0)
        if self.d_model % self.num_attention_heads:
            raise ConfigError(
                f"d_model ({self.d_model}) must be divisible by num_attention_heads ({self.num_attention_heads})"
            )
        self.check_choice("norm_type", NORM_TYPES)
        self.check_choice("activation_function", ACTIVATIONS)
        self.check_choice("positional_encoding_type", POSITIONAL_ENCODINGS)
        self.check_choice("pooling_type", POOLING_TYPES)
        if self.has_distribution_head:
            self.check_choice("distribution_output", DISTRIBUTIONS)
        self.check_norm_eps()
        self.check_output_range()
