"""``PatchTSTConfig``: every field transformers' ``PatchTSTConfig`` has, with its defaults, parsed from
``config.json`` and checked for values PatchTST cannot run with."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from .errors import ConfigError

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
        from .files import CONFIG_MAX_BYTES, read_json

        values = read_json(path, "config.json", CONFIG_MAX_BYTES, ConfigError)
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a JSON object, got {type(values).__name__}")
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": "patchtst", **dataclasses.asdict(self)}

    # --- validation -----------------------------------------------------------------------------
    def validate(self) -> None:
        check_field_types(self)
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


# --------------------------------------------------------------------------------------------------
# Field types, checked as transformers' strict config dataclass checks them
# --------------------------------------------------------------------------------------------------
def _type_name(annotation) -> str:
    if annotation is type(None):
        return "null"
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) in (list, tuple):
        inner = typing.get_args(annotation)
        plural = {int: "integers", float: "floats", str: "strings", bool: "booleans"}
        return f"a {typing.get_origin(annotation).__name__}" + (f" of {plural.get(inner[0], inner[0])}" if inner else "")
    return {bool: "true/false", int: "an integer", float: "a float", str: "a string", list: "a list"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


def _matches(value, annotation) -> bool:
    """``value`` fits ``annotation`` strictly: a bool is no int, an int no float (as transformers checks)."""
    if annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        return any(_matches(value, option) for option in typing.get_args(annotation))
    if origin in (list, tuple):
        if not isinstance(value, origin):
            return False
        inner = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return all(_matches(item, inner[0]) for item in value) if inner else True
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def check_field_types(config) -> None:
    """Every field of a config dataclass holds a value of its declared type; ConfigError names the first that
    does not, the type expected and the value found."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if not _matches(value, hints[field.name]):
            shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
            raise ConfigError(f"{field.name} must be {_type_name(hints[field.name])}, got {shown} "
                              f"({type(value).__name__})")
