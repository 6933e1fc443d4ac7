"""What the mixer families (PatchTSMixer, TinyTimeMixer) share above the kernels: one mixer stack's tensors
(our names, checkpoint layout) and their loading into ``kernels.mixer.MixerStack``.

Our names for a stack's tensors, below a family's prefix: ``layers.{layer}.{block}.{fc1|fc2|gate}.{weight|bias}``
and ``layers.{layer}.{block}.{layernorm|batchnorm}.{...}`` for the blocks ``patch_mixer``, ``feature_mixer`` and
(mix_channel) ``channel_mixer``; ``layers.{layer}.attention.{q|k|v|out}_proj`` and its norm with self-attention.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..kernels.gemm import pack_weight
from ..kernels.mixer import MixerBlocks, MixerStack
from .layers import Linear, Norm, stack_arrays
from .mapping import BATCHNORM, LAYERNORM, LINEAR

# Our block names and the checkpoints' module names: mixing across patches, features, channels.
BLOCKS = (("patch_mixer", "patch_mixer"), ("feature_mixer", "feature_mixer"), ("channel_mixer", "channel_feature_mixer"))


def layer_rules(ours: str, theirs: str) -> tuple[tuple[str, str], ...]:
    """Name rules (our name, checkpoint name) for the layers of one stack: ``ours`` and ``theirs`` name a
    layer (e.g. ``"layers.{layer}"`` and ``"encoder.mlp_mixer_encoder.mixers.{layer}"``). Our names drop the
    module nesting (``norm.norm``, ``mlp``, ``gating_block.attn_layer``)."""
    return (
        *((f"{ours}.{block}.batchnorm.{p}", f"{theirs}.{module}.norm.norm.batchnorm.{p}")
          for block, module in BLOCKS for p in BATCHNORM),
        *((f"{ours}.{block}.layernorm.{p}", f"{theirs}.{module}.norm.norm.{p}") for block, module in BLOCKS for p in LAYERNORM),
        *((f"{ours}.{block}.{linear}.{p}", f"{theirs}.{module}.mlp.{linear}.{p}")
          for block, module in BLOCKS for linear in ("fc1", "fc2") for p in LINEAR),
        *((f"{ours}.{block}.gate.{p}", f"{theirs}.{module}.gating_block.attn_layer.{p}")
          for block, module in BLOCKS for p in LINEAR),
        *((f"{ours}.attention.{proj}.{p}", f"{theirs}.patch_mixer.self_attn_layer.{proj}.{p}")
          for proj in ("q_proj", "k_proj", "v_proj", "out_proj") for p in LINEAR),
        *((f"{ours}.attention.batchnorm.{p}", f"{theirs}.patch_mixer.norm_attn.norm.batchnorm.{p}") for p in BATCHNORM),
        *((f"{ours}.attention.layernorm.{p}", f"{theirs}.patch_mixer.norm_attn.norm.{p}") for p in LAYERNORM),
    )


class StackShape(NamedTuple):
    d_model: int
    num_patches: int
    channels: int
    expansion: int
    layers: int
    mix_channel: bool
    gated: bool
    self_attn: bool
    batch_norm: bool
    gate_outputs: int = 1  # the gate Linear's outputs per input: 2 for granite-tsfm's GLU gate
    patch_mixer: bool = True  # False: no mixing across patches, nor self-attention (TinyTimeMixer's single token)


def _blocks_of(shape: StackShape):
    """(our block name, width it mixes) for each block a layer of this stack holds."""
    blocks = [("patch_mixer", shape.num_patches)] if shape.patch_mixer else []
    blocks.append(("feature_mixer", shape.d_model))
    if shape.mix_channel:
        blocks.append(("channel_mixer", shape.channels))
    return blocks


def stack_shapes(shape: StackShape, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """Every tensor of one stack: our name (with ``prefix``) -> checkpoint layout ([out, in] for a Linear)."""
    d, e = shape.d_model, shape.expansion
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(name: str, inputs: int, outputs: int):
        shapes[f"{prefix}{name}.weight"] = (outputs, inputs)
        shapes[f"{prefix}{name}.bias"] = (outputs,)

    def norm(name: str):
        if shape.batch_norm:
            for stat in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{prefix}{name}.batchnorm.{stat}"] = (d,)
            shapes[f"{prefix}{name}.batchnorm.num_batches_tracked"] = ()
        else:
            for stat in ("weight", "bias"):
                shapes[f"{prefix}{name}.layernorm.{stat}"] = (d,)

    for layer in range(shape.layers):
        for block, width in _blocks_of(shape):
            name = f"layers.{layer}.{block}"
            norm(name)
            linear(f"{name}.fc1", width, width * e)
            linear(f"{name}.fc2", width * e, width)
            if shape.gated:
                linear(f"{name}.gate", width, width * shape.gate_outputs)
        if shape.self_attn and shape.patch_mixer:
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                linear(f"layers.{layer}.attention.{proj}", d, d)
            norm(f"layers.{layer}.attention")
    return shapes


def _norms(state, names, shape: StackShape, dtype):
    norm_type = "batchnorm" if shape.batch_norm else "layernorm"
    norms = [Norm.from_state_dict(state, f"{name}.{norm_type}", norm_type, dtype) for name in names]
    return [stack_arrays([norm[field] for norm in norms], (shape.d_model,), dtype) for field in range(4)]


def _blocks(state, shape: StackShape, prefix: str, block: str, width: int, layers: int, dtype) -> MixerBlocks:
    names = [f"{prefix}layers.{layer}.{block}" for layer in range(layers)]
    hidden = width * shape.expansion
    fc1 = [Linear.from_state_dict(state, f"{name}.fc1", dtype) for name in names]
    fc2 = [Linear.from_state_dict(state, f"{name}.fc2", dtype) for name in names]
    gates = [Linear.from_state_dict(state, f"{name}.gate", dtype) for name in names] if shape.gated else []
    return MixerBlocks(
        *_norms(state, names, shape, dtype),
        pack_weight(stack_arrays([l.weight for l in fc1], (width, hidden), dtype)),
        stack_arrays([l.bias for l in fc1], (hidden,), dtype),
        pack_weight(stack_arrays([l.weight for l in fc2], (hidden, width), dtype)),
        stack_arrays([l.bias for l in fc2], (width,), dtype),
        pack_weight(stack_arrays([l.weight for l in gates], (width, width * shape.gate_outputs), dtype)),
        stack_arrays([l.bias for l in gates], (width * shape.gate_outputs,), dtype))


def load_stack(state: dict, shape: StackShape, dtype, prefix: str = "") -> MixerStack:
    """One stack's mapped tensors (our names, with ``prefix``) -> ``MixerStack``: Linear weights transposed to
    [in, out] (the MLPs' and gates' then packed, ``gemm.pack_weight``), per-layer tensors stacked; q, k and v
    side by side."""
    d, layers = shape.d_model, shape.layers
    attention_layers = layers if shape.self_attn and shape.patch_mixer else 0
    qkv, out = [], []
    for layer in range(attention_layers):
        q, k, v, o = (Linear.from_state_dict(state, f"{prefix}layers.{layer}.attention.{p}", dtype)
                      for p in ("q_proj", "k_proj", "v_proj", "out_proj"))
        qkv.append(Linear(np.concatenate([q.weight, k.weight, v.weight], axis=1), np.concatenate([q.bias, k.bias, v.bias])))
        out.append(o)
    attention_norm = _norms(state, [f"{prefix}layers.{layer}.attention" for layer in range(attention_layers)], shape,
                            dtype)
    nothing = [np.zeros((0, 0, 0, 0), dtype), np.zeros((0, 0), dtype)]  # a packed weight, a bias
    return MixerStack(
        channel=_blocks(state, shape, prefix, "channel_mixer", shape.channels, layers if shape.mix_channel else 0,
                        dtype),
        patch=_blocks(state, shape, prefix, "patch_mixer", shape.num_patches, layers if shape.patch_mixer else 0,
                      dtype),
        feature=_blocks(state, shape, prefix, "feature_mixer", d, layers, dtype),
        qkv_weight=stack_arrays([l.weight for l in qkv], (d, 3 * d), dtype),
        qkv_bias=stack_arrays([l.bias for l in qkv], (3 * d,), dtype),
        out_weight=stack_arrays([l.weight for l in out], (d, d), dtype),
        out_bias=stack_arrays([l.bias for l in out], (d,), dtype),
        attention_norm=MixerBlocks(*attention_norm, *nothing, *nothing, *nothing),
    )
