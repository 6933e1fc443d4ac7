"""Name mapping as data: each family declares one rule table pairing its names with the checkpoint names
they come from, and ``RuleTable`` reads it both ways.

In a rule, ``{layer}``, ``{channel}`` and ``{param}`` stand for a layer, an input channel and a distribution
parameter. Encoder rules name tensors that carry transformers' ``model.`` prefix in every task class and
none in a bare ``...Model`` checkpoint; both are accepted.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import numpy as np

from ..errors import WeightMappingError

ENCODER_PREFIX = "model."
LINEAR = ("weight", "bias")
BATCHNORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
LAYERNORM = ("weight", "bias")


def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"(\{\w+\})", template)
    regex = "".join(f"(?P<{part[1:-1]}>0|[1-9][0-9]*)" if part.startswith("{") else re.escape(part) for part in parts)
    return re.compile(regex + r"\Z")


@dataclasses.dataclass
class WeightMappingResult:
    """``mapped``: our name -> array (still in the checkpoint's layout); ``unmapped``: keys no rule matched.

    ``sources`` remembers which checkpoint key each of our names came from.
    """

    mapped: dict[str, np.ndarray]
    unmapped: list[str]
    sources: dict[str, str] = dataclasses.field(default_factory=dict)


class RuleTable:
    """A family's rules, (our name, checkpoint name without the encoder's prefix: ``model.`` in transformers'
    task classes, ``backbone.`` in TinyTimeMixerForPrediction), encoder rules first."""

    def __init__(self, family: str, encoder_rules, head_rules, encoder_prefix: str = ENCODER_PREFIX):
        self.family, self.encoder_prefix = family, encoder_prefix
        self.encoder_rules, self.head_rules = tuple(encoder_rules), tuple(head_rules)

    # The patterns are compiled on first use: compiling a family's few hundred at import took up to 40 ms.
    @functools.cached_property
    def _to_ours(self):
        return ([(_pattern(theirs), ours, True) for ours, theirs in self.encoder_rules]
                + [(_pattern(theirs), ours, False) for ours, theirs in self.head_rules])

    @functools.cached_property
    def _to_theirs(self):
        return ([(_pattern(ours), theirs, True) for ours, theirs in self.encoder_rules]
                + [(_pattern(ours), theirs, False) for ours, theirs in self.head_rules])

    def our_name(self, hf_key: str) -> str | None:
        """The rustml_nb name of one checkpoint key, or None when no rule matches it."""
        for pattern, template, is_encoder in self._to_ours:
            key = hf_key
            if is_encoder and key.startswith(self.encoder_prefix):
                key = key[len(self.encoder_prefix):]
            match = pattern.match(key)
            if match:
                return template.format(**match.groupdict())
        return None

    def hf_name(self, name: str, prefixed: bool = True) -> str:
        """The checkpoint key one of our names comes from (``prefixed=False``: a bare ``...Model``'s)."""
        for pattern, template, is_encoder in self._to_theirs:
            match = pattern.match(name)
            if match:
                key = template.format(**match.groupdict())
                return self.encoder_prefix + key if (is_encoder and prefixed) else key
        raise KeyError(f"{name!r} is not a rustml_nb {self.family} tensor name")

    def map(self, hf_weights: dict[str, np.ndarray]) -> WeightMappingResult:
        """Rename a transformers state dict to rustml_nb names. Raises ``WeightMappingError`` when two
        checkpoint keys land on one name (e.g. both ``model.x`` and ``x``), since one would be dropped."""
        mapped: dict[str, np.ndarray] = {}
        sources: dict[str, str] = {}
        unmapped: list[str] = []
        for key in sorted(hf_weights):
            name = self.our_name(key)
            if name is None:
                unmapped.append(key)
                continue
            if name in mapped:
                raise WeightMappingError(
                    f"checkpoint keys {sources[name]!r} and {key!r} both map to {name!r}; a checkpoint holds one of them")
            mapped[name] = hf_weights[key]
            sources[name] = key
        return WeightMappingResult(mapped=mapped, unmapped=unmapped, sources=sources)
