"""``PatchTSTConfig``: every field transformers' ``PatchTSTConfig`` has, with its defaults, parsed from
``config.json`` and checked for values PatchTST cannot run with."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .errors import ConfigError, MissingFileError

NORM_TYPES = ("batchnorm", "layernorm")
ACTIVATIONS = ("gelu", "relu")
POSITIONAL_ENCODINGS = ("sincos", "random")
POOLING_TYPES = ("mean", "max", None)
DISTRIBUTIONS = ("student_t", "normal", "negative_binomial")
# The number of parameters each distribution head emits, in transformers' order.
DISTRIBUTION_PARAMETERS = {
    "student_t": ("df", "loc", "scale"),
    "normal": ("loc", "scale"),
    "negative_binomial": ("total_count", "logits"),
}


@dataclasses.dataclass
class PatchTSTConfig:
    """The configuration of a PatchTST checkpoint; field names and defaults are transformers'."""

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
    attention_dropout: float = 0.0
    positional_dropout: float = 0.0
    path_dropout: float = 0.0
    ff_dropout: float = 0.0
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
    num_forecast_mask_patches: list[int] | int | None = dataclasses.field(default_factory=lambda: [2])
    channel_consistent_masking: bool | None = False
    unmasked_channel_indices: list[int] | None = None
    mask_value: int = 0
    pooling_type: str | None = "mean"
    head_dropout: float = 0.0
    prediction_length: int = 24
    num_targets: int = 1
    output_range: list[float] | None = None
    num_parallel_samples: int = 100
    # From transformers' PretrainedConfig: which class wrote the checkpoint.
    architectures: list[str] | None = None

    def __post_init__(self):
        self.validate()

    # --- derived values -------------------------------------------------------------------------
    @property
    def num_patches(self) -> int:
        """Patches per channel, as transformers' ``PatchTSTPatchify`` computes it."""
        return (max(self.context_length, self.patch_length) - self.patch_length) // self.patch_stride + 1

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

    # --- parsing --------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "PatchTSTConfig":
        """Build from a ``config.json`` dict; keys transformers' generic config adds are ignored."""
        model_type = values.get("model_type")
        if model_type != "patchtst":
            raise ConfigError(f"{source}: expected model_type 'patchtst', got {model_type!r}")
        known = {field.name for field in dataclasses.fields(cls)}
        try:
            return cls(**{key: value for key, value in values.items() if key in known})
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None

    @classmethod
    def from_json_file(cls, path) -> "PatchTSTConfig":
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            raise MissingFileError(f"config.json not found: {path}") from None
        except ValueError as error:
            raise ConfigError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a JSON object, got {type(values).__name__}")
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": "patchtst", **dataclasses.asdict(self)}

    # --- validation -----------------------------------------------------------------------------
    def validate(self) -> None:
        for name in ("num_input_channels", "context_length", "patch_length", "patch_stride", "d_model",
                     "num_attention_heads", "ffn_dim", "prediction_length", "num_targets"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.num_hidden_layers, bool) or not isinstance(self.num_hidden_layers, int) or self.num_hidden_layers < 0:
            raise ConfigError(f"num_hidden_layers must be a non-negative integer, got {self.num_hidden_layers!r}")
        if self.d_model % self.num_attention_heads:
            raise ConfigError(
                f"d_model ({self.d_model}) must be divisible by num_attention_heads ({self.num_attention_heads})"
            )
        if self.context_length <= self.patch_length:
            raise ConfigError(
                f"context_length ({self.context_length}) must be greater than patch_length ({self.patch_length})"
            )
        self._check_choice("norm_type", NORM_TYPES)
        self._check_choice("activation_function", ACTIVATIONS)
        self._check_choice("positional_encoding_type", POSITIONAL_ENCODINGS)
        self._check_choice("pooling_type", POOLING_TYPES)
        if self.has_distribution_head:
            self._check_choice("distribution_output", DISTRIBUTIONS)
        if not isinstance(self.norm_eps, (int, float)) or not self.norm_eps >= 0:
            raise ConfigError(f"norm_eps must be a non-negative number, got {self.norm_eps!r}")
        if self.output_range is not None:
            if (not isinstance(self.output_range, (list, tuple)) or len(self.output_range) != 2
                    or not all(isinstance(v, (int, float)) for v in self.output_range)):
                raise ConfigError(f"output_range must be [low, high], got {self.output_range!r}")

    def _check_choice(self, name: str, choices: tuple) -> None:
        value = getattr(self, name)
        if value not in choices:
            raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}")
