"""Consumer layer: mapped weights -> typed structs the compiled forward pass takes directly.

Every array is C-contiguous, in the model's dtype, laid out as the kernels read it: Linear weights
transposed from PyTorch's ``[out, in]`` to ``[in, out]``. Per-layer tensors are stacked along a leading
``num_layers`` axis (and per-channel ones along a ``channels`` axis), so the struct's Numba type does not
depend on depth or channel count and one compilation serves every checkpoint of a dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..layers import Linear, Norm, stack_arrays, validate_state, weight_array
from .config import PatchTSTConfig
from .detection import distribution_parameters, expected_shapes


class EncoderWeights(NamedTuple):
    embedding_weight: np.ndarray  # [1 or channels, patch_length, d_model]
    embedding_bias: np.ndarray  # [1 or channels, d_model]
    positional_encoding: np.ndarray  # [num_tokens, d_model] (row 0 belongs to the cls token when used)
    cls_token: np.ndarray  # [d_model]; zeros when unused
    qkv_weight: np.ndarray  # [layers, d_model, 3 * d_model]: q, k, v projections side by side
    qkv_bias: np.ndarray  # [layers, 3 * d_model]
    out_weight: np.ndarray  # [layers, d_model, d_model]
    out_bias: np.ndarray  # [layers, d_model]
    norm_weight: np.ndarray  # [layers, 3, d_model]: norms of attention, channel attention, feed-forward
    norm_bias: np.ndarray  # [layers, 3, d_model]
    norm_mean: np.ndarray  # [layers, 3, d_model]
    norm_var: np.ndarray  # [layers, 3, d_model]
    ff1_weight: np.ndarray  # [layers, d_model, ffn_dim]
    ff1_bias: np.ndarray  # [layers, ffn_dim]
    ff2_weight: np.ndarray  # [layers, ffn_dim, d_model]
    ff2_bias: np.ndarray  # [layers, d_model]
    # Layer 0's QKV projection folded into the patch embedding (see fold_embedding_into_first_qkv); both have
    # a leading dimension of 0 when the checkpoint does not allow it.
    patch_qkv_weight: np.ndarray  # [1 or 0, patch_length, 3 * d_model]
    position_qkv_t: np.ndarray  # [1 or 0, 3 * d_model, num_tokens]: transposed, as qkv_t is


class HeadWeights(NamedTuple):
    weight: np.ndarray  # [1 or channels, parameters, in, out]
    bias: np.ndarray  # [1 or channels, parameters, out]


class PatchTSTWeights(NamedTuple):
    encoder: EncoderWeights
    head: HeadWeights


def fold_embedding_into_first_qkv(config: PatchTSTConfig, embedding: Linear, positional_encoding: np.ndarray,
                                  qkv: Linear, norm: Norm) -> tuple[np.ndarray, np.ndarray] | None:
    """Layer 0's attention reads an affine function of the patches: their embedding plus positions, through
    a BatchNorm with pre-norm (eval mode: affine) or nothing with post-norm. So its QKV projection (without
    its bias, which attention adds) is patches @ W + offset[token], W = W_embed diag(a) W_qkv,
    offset = ((b_embed + position) * a + c) @ W_qkv for the norm's x -> a x + c: a GEMM of inner size
    patch_length (12) instead of d_model (128), about 8% of the granite shape's GEMM work. Computed in
    float64; None when not affine (LayerNorm with pre-norm), with a cls token (its row has no patch), or
    with one embedding per channel. Returns (W [patch_length, 3 d_model], offset^T [3 d_model, tokens])."""
    if config.num_hidden_layers == 0 or config.use_cls_token or not config.share_embedding:
        return None
    if config.pre_norm and config.norm_type != "batchnorm":
        return None
    d_model = config.d_model
    scale, shift = np.ones(d_model), np.zeros(d_model)
    if config.pre_norm:
        scale = norm.weight.astype(np.float64) / np.sqrt(norm.running_var.astype(np.float64) + config.norm_eps)
        shift = norm.bias.astype(np.float64) - norm.running_mean.astype(np.float64) * scale
    qkv_weight = qkv.weight.astype(np.float64)
    weight = (embedding.weight.astype(np.float64) * scale) @ qkv_weight
    embedded = embedding.bias.astype(np.float64) + positional_encoding.astype(np.float64)  # [tokens, d_model]
    return weight, ((embedded * scale + shift) @ qkv_weight).T


def load_encoder(state: dict, config: PatchTSTConfig, dtype) -> EncoderWeights:
    d_model = config.d_model
    if config.share_embedding:
        embeddings = [Linear.from_state_dict(state, "embedding", dtype)]
    else:
        embeddings = [Linear.from_state_dict(state, f"embedding.{c}", dtype) for c in range(config.num_input_channels)]
    cls_token = state["cls_token"].reshape(d_model) if config.use_cls_token else np.zeros(d_model)

    qkv, out, norms, ff1, ff2 = [], [], [], [], []
    for layer in range(config.num_hidden_layers):
        prefix = f"encoder_layers.{layer}"
        q, k, v, o = (Linear.from_state_dict(state, f"{prefix}.attention.{p}", dtype)
                      for p in ("q_proj", "k_proj", "v_proj", "out_proj"))
        qkv.append(Linear(np.concatenate([q.weight, k.weight, v.weight], axis=1),
                          np.concatenate([q.bias, k.bias, v.bias])))
        out.append(o)
        layer_norms = []
        for sublayer in ("attention", "channel_attention", "ff"):
            name = f"{prefix}.{sublayer}_{config.norm_type}"
            if f"{name}.weight" in state:
                layer_norms.append(Norm.from_state_dict(state, name, config.norm_type, dtype))
            else:  # no channel attention: an identity placeholder the kernel never reads
                layer_norms.append(Norm(*(np.full(d_model, fill) for fill in (1.0, 0.0, 0.0, 1.0))))
        norms.append(layer_norms)
        ff1.append(Linear.from_state_dict(state, f"{prefix}.ff.linear1", dtype))
        ff2.append(Linear.from_state_dict(state, f"{prefix}.ff.linear2", dtype))

    folded = None
    if qkv:
        folded = fold_embedding_into_first_qkv(config, embeddings[0], np.asarray(state["positional_encoding"]),
                                               qkv[0], norms[0][0])
    if folded is None:
        folded = (np.zeros((0, config.patch_length, 3 * d_model)), np.zeros((0, 3 * d_model, 0)))
    else:
        folded = tuple(part[None] for part in folded)

    def norm_field(field: int) -> np.ndarray:
        return stack_arrays([np.stack([norm[field] for norm in layer]) for layer in norms], (3, d_model), dtype)

    return EncoderWeights(
        embedding_weight=stack_arrays([e.weight for e in embeddings], (), dtype),
        embedding_bias=stack_arrays([e.bias for e in embeddings], (), dtype),
        positional_encoding=weight_array(state["positional_encoding"], dtype),
        cls_token=weight_array(cls_token, dtype),
        qkv_weight=stack_arrays([l.weight for l in qkv], (d_model, 3 * d_model), dtype),
        qkv_bias=stack_arrays([l.bias for l in qkv], (3 * d_model,), dtype),
        out_weight=stack_arrays([l.weight for l in out], (d_model, d_model), dtype),
        out_bias=stack_arrays([l.bias for l in out], (d_model,), dtype),
        norm_weight=norm_field(0),
        norm_bias=norm_field(1),
        norm_mean=norm_field(2),
        norm_var=norm_field(3),
        ff1_weight=stack_arrays([l.weight for l in ff1], (d_model, config.ffn_dim), dtype),
        ff1_bias=stack_arrays([l.bias for l in ff1], (config.ffn_dim,), dtype),
        ff2_weight=stack_arrays([l.weight for l in ff2], (config.ffn_dim, d_model), dtype),
        ff2_bias=stack_arrays([l.bias for l in ff2], (d_model,), dtype),
        patch_qkv_weight=weight_array(folded[0], dtype),
        position_qkv_t=weight_array(folded[1], dtype),
    )


def load_head(state: dict, config: PatchTSTConfig, head: str, dtype) -> HeadWeights:
    if head == "none":
        return HeadWeights(np.zeros((0, 0, 0, 0), dtype), np.zeros((0, 0, 0), dtype))
    if head in ("pretraining", "classification"):
        owners = [["head.linear"]]
    else:
        params = distribution_parameters(config, head)
        shared = head == "regression" or config.share_projection
        channels = [""] if shared else [f".{c}" for c in range(config.num_input_channels)]
        if params:
            kind = "distribution" if shared else "channel_distribution"
            owners = [[f"head.{kind}{c}.{k}" for k in range(len(params))] for c in channels]
        else:
            kind = "projection" if shared else "channel_projection"
            owners = [[f"head.{kind}{c}"] for c in channels]
    linears = [[Linear.from_state_dict(state, prefix, dtype) for prefix in group] for group in owners]
    return HeadWeights(
        weight=weight_array(np.stack([np.stack([l.weight for l in group]) for group in linears]), dtype),
        bias=weight_array(np.stack([np.stack([l.bias for l in group]) for group in linears]), dtype),
    )


def load_patchtst_weights(mapped: dict, config: PatchTSTConfig, head: str, dtype, unmapped=(),
                          sources=None) -> PatchTSTWeights:
    """Check names, shapes and values against the config, then transpose and stack into ``PatchTSTWeights``.
    ``sources`` (our name -> checkpoint key) lets errors name the checkpoint's key."""
    validate_state(mapped, list(unmapped), expected_shapes(config, head), f"PatchTST ({head} head)", sources)
    return PatchTSTWeights(load_encoder(mapped, config, dtype), load_head(mapped, config, head, dtype))


__all__ = ["Linear", "Norm", "EncoderWeights", "HeadWeights", "PatchTSTWeights", "load_patchtst_weights"]
