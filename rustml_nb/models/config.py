"""What the families' configs share: parsing config.json into a dataclass with transformers' field names,
types and defaults, and checking every field's type as transformers' strict config dataclass does."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, ClassVar

from ..errors import ConfigError

DISTRIBUTIONS = ("student_t", "normal", "negative_binomial")
# The parameters each distribution head emits, in transformers' order.
DISTRIBUTION_PARAMETERS = {
    "student_t": ("df", "loc", "scale"),
    "normal": ("loc", "scale"),
    "negative_binomial": ("total_count", "logits"),
}


def head_named(config, architecture_heads: dict[str, str]) -> str | None:
    """The head ``config.architectures`` names (``architecture_heads``: class name -> head), or None when it
    names none of them."""
    for architecture in config.architectures or ():
        if architecture in architecture_heads:
            return architecture_heads[architecture]
    return None


def override_fields(config, values: dict):
    """``config`` with ``values`` in place of its fields, checked again; ConfigError naming unknown fields."""
    if not values:
        return config
    unknown = sorted(set(values) - {field.name for field in dataclasses.fields(config)})
    if unknown:
        raise ConfigError(f"{type(config).__name__} has no field(s) {unknown}")
    try:
        return dataclasses.replace(config, **values)
    except ConfigError as error:
        raise ConfigError(f"overriding config.json with {values}: {error}") from None


class FamilyConfig:
    """Mixed into each family's config dataclass: parsing and the checks every family makes."""

    MODEL_TYPE: ClassVar[str]

    def __post_init__(self):
        check_field_types(self)
        self.validate()

    @property
    def num_patches(self) -> int:
        """Patches per channel, as transformers' patchify computes it."""
        return (max(self.context_length, self.patch_length) - self.patch_length) // self.patch_stride + 1

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config"):
        """Build from a ``config.json`` dict; keys transformers' generic config adds are ignored."""
        model_type = values.get("model_type")
        if model_type != cls.MODEL_TYPE:
            raise ConfigError(f"{source}: expected model_type {cls.MODEL_TYPE!r}, got {model_type!r}")
        known = {field.name for field in dataclasses.fields(cls)}
        try:
            return cls(**{key: value for key, value in values.items() if key in known})
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None

    @classmethod
    def from_json_file(cls, path):
        from ..files import CONFIG_MAX_BYTES, read_json

        values = read_json(path, "config.json", CONFIG_MAX_BYTES, ConfigError)
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a JSON object, got {type(values).__name__}")
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": self.MODEL_TYPE, **dataclasses.asdict(self)}

    def validate(self) -> None:
        """Values the family cannot run with: ConfigError naming the field."""

    def check_positive(self, *names: str, minimum: int = 1) -> None:
        for name in names:
            value = getattr(self, name)
            if value < minimum:
                raise ConfigError(f"{name} must be {'a positive' if minimum else 'a non-negative'} integer, "
                                  f"got {value!r}")

    def check_choice(self, name: str, choices: tuple) -> None:
        value = getattr(self, name)
        if value not in choices:
            raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}")

    def check_patching(self) -> None:
        self.check_positive("num_input_channels", "context_length", "patch_length", "patch_stride")
        if self.context_length <= self.patch_length:
            raise ConfigError(
                f"context_length ({self.context_length}) must be greater than patch_length ({self.patch_length})")

    def check_norm_eps(self) -> None:
        if not self.norm_eps >= 0:
            raise ConfigError(f"norm_eps must be a non-negative number, got {self.norm_eps!r}")

    def check_output_range(self) -> None:
        if self.output_range is not None and (len(self.output_range) != 2 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.output_range)):
            raise ConfigError(f"output_range must be [low, high], got {self.output_range!r}")


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
