"""Hypothesis strategies: small PatchTST configs over every switch transformers has."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def patchtst_kwargs(draw, class_name: str, runnable_in_transformers: bool = True):
    """transformers.PatchTSTConfig keyword arguments for ``class_name``.

    ``runnable_in_transformers`` leaves out what transformers itself cannot run (per-channel projection
    heads; a distribution prediction head with prediction_length 1; pooling None on
    classification/regression), so parity can be checked against it.
    """
    patch_length = draw(st.integers(1, 5))
    patch_stride = draw(st.integers(1, 5))
    num_patches = draw(st.integers(1, 5))
    leftover = draw(st.integers(0, patch_stride - 1))  # steps patchify drops at the start
    context_length = max(patch_length + patch_stride * (num_patches - 1) + leftover, patch_length + 1)
    num_heads = draw(st.integers(1, 3))
    positional_encoding_type = draw(st.sampled_from(["sincos", "random"]))
    head_dim = draw(st.integers(1, 4))
    if positional_encoding_type == "sincos" and (num_heads * head_dim) % 2:
        head_dim *= 2  # transformers cannot build its sin/cos table for an odd d_model
    use_cls_token = draw(st.booleans())
    pooled_heads = class_name in ("PatchTSTForClassification", "PatchTSTForRegression")
    pooling = draw(st.sampled_from(["mean", "max"] if pooled_heads and not use_cls_token and runnable_in_transformers
                                   else ["mean", "max", None]))
    loss = draw(st.sampled_from(["mse", "nll"]))
    prediction_length = draw(st.integers(2 if (loss == "nll" and runnable_in_transformers) else 1, 5))
    kwargs = dict(
        num_input_channels=draw(st.integers(1, 3)),
        context_length=context_length,
        patch_length=patch_length,
        patch_stride=patch_stride,
        num_attention_heads=num_heads,
        d_model=num_heads * head_dim,
        ffn_dim=draw(st.integers(1, 10)),
        num_hidden_layers=draw(st.integers(0, 2)),
        share_embedding=draw(st.booleans()),
        channel_attention=draw(st.booleans()),
        norm_type=draw(st.sampled_from(["batchnorm", "layernorm"])),
        norm_eps=draw(st.sampled_from([1e-5, 1e-3])),
        pre_norm=draw(st.booleans()),
        activation_function=draw(st.sampled_from(["gelu", "relu"])),
        positional_encoding_type=positional_encoding_type,
        use_cls_token=use_cls_token,
        bias=draw(st.booleans()),
        scaling=draw(st.sampled_from(["std", "mean", None, True])),
        pooling_type=pooling,
        share_projection=True if runnable_in_transformers else draw(st.booleans()),
        loss=loss,
        distribution_output=draw(st.sampled_from(["student_t", "normal", "negative_binomial"])),
        prediction_length=prediction_length,
        num_targets=draw(st.integers(1, 3)),
        output_range=draw(st.sampled_from([None, [-2.0, 5.0]])),
        mask_value=draw(st.sampled_from([0, 3])),
    )
    return kwargs


@st.composite
def patchtsmixer_kwargs(draw, class_name: str, runnable_in_transformers: bool = True):
    """transformers.PatchTSMixerConfig keyword arguments for ``class_name``.

    ``runnable_in_transformers`` leaves out what transformers itself cannot run (a distribution prediction
    head with prediction_length 1; losses other than mse and nll), so parity can be checked against it.
    """
    patch_length = draw(st.integers(1, 5))
    patch_stride = draw(st.integers(1, 5))
    num_patches = draw(st.integers(1, 5))
    leftover = draw(st.integers(0, patch_stride - 1))
    context_length = max(patch_length + patch_stride * (num_patches - 1) + leftover, patch_length + 1)
    heads = draw(st.integers(1, 3))
    head_dim = draw(st.integers(1, 4))
    use_positional_encoding = draw(st.booleans())
    positional_encoding_type = draw(st.sampled_from(["sincos", "random"]))
    if use_positional_encoding and positional_encoding_type == "sincos" and (heads * head_dim) % 2:
        head_dim *= 2  # transformers cannot build its sin/cos table for an odd d_model
    channels = draw(st.integers(1, 3))
    losses = ["mse", "nll"] if runnable_in_transformers else ["mse", "nll", "mae"]
    loss = draw(st.sampled_from(losses))
    prediction_length = draw(st.integers(2 if (loss != "mse" and runnable_in_transformers) else 1, 5))
    indices = None
    if draw(st.booleans()):
        indices = draw(st.lists(st.integers(0, channels - 1), min_size=1, max_size=channels, unique=True))
    return dict(
        num_input_channels=channels, context_length=context_length, patch_length=patch_length,
        patch_stride=patch_stride, d_model=heads * head_dim, self_attn_heads=heads,
        expansion_factor=draw(st.integers(1, 3)), num_layers=draw(st.integers(0, 2)),
        mode=draw(st.sampled_from(["common_channel", "mix_channel"])), gated_attn=draw(st.booleans()),
        self_attn=draw(st.booleans()), norm_mlp=draw(st.sampled_from(["LayerNorm", "BatchNorm", "batch", "layernorm"])),
        norm_eps=draw(st.sampled_from([1e-5, 1e-3])), use_positional_encoding=use_positional_encoding,
        positional_encoding_type=positional_encoding_type, scaling=draw(st.sampled_from(["std", "mean", None, True])),
        loss=loss, distribution_output=draw(st.sampled_from(["student_t", "normal", "negative_binomial"])),
        prediction_length=prediction_length, prediction_channel_indices=indices,
        num_targets=draw(st.integers(1, 3)), output_range=draw(st.sampled_from([None, [-2.0, 5.0]])),
        head_aggregation=draw(st.sampled_from([None, "use_last", "max_pool", "avg_pool"])),
        mask_value=draw(st.sampled_from([0, 3])),
    )
