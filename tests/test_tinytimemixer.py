"""TinyTimeMixer: config, name mapping, detection and parity with granite-tsfm (tsfm_public 0.3.11) over its
switches, with random weights and BatchNorm running statistics saved by ``save_pretrained``."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import rustml_nb
from rustml_nb.errors import ConfigError, InputError
from rustml_nb.models.tinytimemixer import TinyTimeMixerConfig, map_tinytimemixer_weights
from rustml_nb.models.tinytimemixer.detection import expected_shapes
from rustml_nb.models.tinytimemixer.mapping import hf_name
from rustml_nb.parity import reference_module
from reference import COMPILE_COUNTER, assert_each_series_as_alone, cli_watching_slice_assignments
from test_parity import TORCH_DTYPES, compare_outputs


def granite():
    """granite-tsfm's TinyTimeMixer module, imported without running tsfm_public's package __init__ (which
    imports its toolkit: datasets, scikit-learn)."""
    return reference_module(rustml_nb.models.tinytimemixer.REFERENCE)


def build_reference(class_name="TinyTimeMixerForPrediction", seed=0, **kwargs):
    """A granite-tsfm model with random weights (not its init: every weight and bias drawn, so no part is
    trivially zero) and random BatchNorm running statistics, in eval mode."""
    module = granite()
    torch.manual_seed(seed)
    config = module.TinyTimeMixerConfig(**kwargs)
    model = getattr(module, class_name)(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.3)
        for layer in model.modules():
            if isinstance(layer, torch.nn.BatchNorm1d):
                layer.running_mean.normal_()
                layer.running_var.uniform_(0.5, 2.0)
            if hasattr(layer, "freq_index_mlp"):  # see test_fft_token_mlp_fails_in_float64_in_granite_tsfm
                layer.freq_index_mlp.register_forward_pre_hook(to_weight_dtype)
    return model


def to_weight_dtype(mlp, inputs):
    """granite-tsfm's FFT-token MLP gets its bins' positions in float32 whatever the model's dtype, which a
    float64 model then refuses: cast them to the model's dtype first (the evident intent)."""
    return (inputs[0].to(mlp[0].weight.dtype),)


def save(model, tmp_path):
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    return folder


# r1 / r2 512-96 as released: context 512, patch 64, d_model 192, 2 layers, 3 adaptive levels, a decoder of
# d_model 128 and 2 layers (805,280 parameters).
RELEASED_512_96 = dict(context_length=512, patch_length=64, patch_stride=64, d_model=192, num_layers=2,
                       adaptive_patching_levels=3, decoder_d_model=128, decoder_num_layers=2,
                       prediction_length=96, num_input_channels=1, gated_attn=True, scaling="std", expansion_factor=2)


@st.composite
def ttm_kwargs(draw):
    patch = draw(st.sampled_from([4, 8]))
    levels = draw(st.integers(0, 3))
    d_model = draw(st.sampled_from([16, 24, 32]))
    kwargs = dict(
        num_input_channels=draw(st.integers(1, 3)), patch_length=patch, patch_stride=patch,
        context_length=draw(st.sampled_from([patch + patch // 2, *(patch * n for n in range(2, 7))])),  # 1 patch too
        d_model=d_model, num_layers=draw(st.integers(1, 2)),
        expansion_factor=draw(st.integers(1, 3)), adaptive_patching_levels=levels,
        mode=draw(st.sampled_from(["common_channel", "mix_channel"])), gated_attn=draw(st.booleans()),
        norm_mlp=draw(st.sampled_from(["LayerNorm", "BatchNorm"])),
        scaling=draw(st.sampled_from(["std", "mean", None, True])),
        use_positional_encoding=draw(st.booleans()), positional_encoding_type=draw(st.sampled_from(["sincos", "random"])),
        resolution_prefix_tuning=draw(st.booleans()), prediction_length=draw(st.integers(1, 12)),
        use_decoder=draw(st.booleans()), decoder_d_model=draw(st.sampled_from([8, 16, d_model])),
        decoder_num_layers=draw(st.integers(1, 2)), decoder_adaptive_patching_levels=draw(st.integers(0, 2)),
        decoder_mode=draw(st.sampled_from(["common_channel", "mix_channel"])),
        decoder_raw_residual=draw(st.booleans()), frequency_token_vocab_size=draw(st.integers(2, 6)),
        enable_base_norm_always=draw(st.booleans()),
        gate_mode=draw(st.sampled_from(["softmax", "sigmoid", "glu", "group_sigmoid"])),
        gate_groups=draw(st.sampled_from([1, 3, 8])),
        # r3's tokens: register tokens, multi-scale patches, FFT tokens
        register_tokens=draw(st.sampled_from([0, 0, 1, 3])), multi_scale=draw(st.booleans()),
        fft_length=draw(st.sampled_from([0, 0, 1, 3])), use_fft_embedding=draw(st.booleans()),
        get_one_freq_emb=draw(st.booleans()), fft_ignore_dc=draw(st.booleans()),
    )
    if kwargs["register_tokens"] or kwargs["multi_scale"] or kwargs["fft_length"]:
        kwargs["decoder_raw_residual"] = False  # granite-tsfm cannot run it with them (test_r3_tokens_...)
    if draw(st.booleans()):  # r3's multi-quantile head
        kwargs.update(multi_quantile_head=True, mq_kernel_size=draw(st.sampled_from([1, 3, 5])),
                      mq_hidden=draw(st.sampled_from([2, 8])), mq_q50_type=draw(st.sampled_from(["median", "mean"])),
                      quantile_levels=draw(st.sampled_from([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                                                            [0.75, 0.5, 0.25], [0.5]])),
                      mq_use_decoder_pool=draw(st.booleans()), mq_cond_path=draw(st.sampled_from(["pool", "flatten"])),
                      mq_cond_mode=draw(st.sampled_from(["add", "concat"])),
                      mq_decoder_d_model=draw(st.sampled_from([2, 5])))
    if draw(st.booleans()):
        kwargs.update(self_attn=True, self_attn_heads=draw(st.sampled_from([1, 2])))
    channels = kwargs["num_input_channels"]
    if draw(st.booleans()):
        chosen = draw(st.lists(st.integers(0, channels - 1), min_size=1, max_size=channels, unique=True))
        kwargs["prediction_channel_indices"] = chosen
    if draw(st.booleans()):
        kwargs["prediction_filter_length"] = draw(st.integers(1, kwargs["prediction_length"]))
    if kwargs.get("prediction_filter_length", kwargs["prediction_length"]) < 2:
        kwargs["multi_quantile_head"] = False  # granite-tsfm cannot run it (test_multi_quantile_head_refuses_...)
    if kwargs.get("mq_use_decoder_pool") and (  # what granite-tsfm cannot run (test_multi_quantile_head_refuses_...)
            not kwargs["use_decoder"] and d_model != kwargs["decoder_d_model"]
            or len(kwargs.get("prediction_channel_indices", range(channels))) != channels):
        kwargs["mq_use_decoder_pool"] = False
    return kwargs


def inputs(kwargs, rng, batch, length=None):
    length = length or kwargs["context_length"]
    values = rng.normal(size=(batch, length, kwargs["num_input_channels"])) * 3 + 1
    tokens = rng.integers(0, kwargs.get("frequency_token_vocab_size", 5), size=batch)
    return values, tokens


def run_both(folder, reference, values, tokens, dtype, mask=None):
    ours = rustml_nb.from_pretrained(folder, dtype=dtype)
    freq = tokens if ours.config.resolution_prefix_tuning else None
    reference = reference.to(TORCH_DTYPES[dtype])
    with torch.no_grad():
        theirs = reference(past_values=torch.from_numpy(values.astype(dtype)),
                           past_observed_mask=None if mask is None else torch.from_numpy(mask.astype(dtype)),
                           freq_token=None if freq is None else torch.from_numpy(freq), output_hidden_states=True)
    return ours(values.astype(dtype), past_observed_mask=mask, freq_token=freq, output_hidden_states=True), theirs


def check_parity(reference, kwargs, where, dtype, seed, batch):
    """Save ``reference`` under ``where``, run it and ours on ``batch`` drawn series and compare every field
    (float32 judged against granite-tsfm's float64 too, see compare_outputs). Returns (ours, folder)."""
    folder = save(reference, where)
    values, tokens = inputs(kwargs, np.random.default_rng(seed), batch)
    ours, theirs = run_both(folder, reference, values, tokens, dtype)
    truth = run_both(folder, reference, values, tokens, "float64")[1] if dtype == "float32" else None
    compare_outputs(ours, theirs, dtype, truth)
    model = rustml_nb.from_pretrained(folder, dtype=dtype)
    freq = tokens if model.config.resolution_prefix_tuning else None
    assert_each_series_as_alone(
        lambda i: model(values[i:i + 1].astype(dtype), freq_token=None if freq is None else freq[i:i + 1],
                        output_hidden_states=True), ours, batch)
    return ours, folder


@given(ttm_kwargs(), st.sampled_from(["float64", "float32"]), st.integers(1, 4), st.integers(0, 2 ** 16))
def test_prediction_matches_granite_tsfm(tmp_path_factory, kwargs, dtype, batch, seed):
    reference = build_reference(seed=seed, **kwargs)
    _, folder = check_parity(reference, kwargs, tmp_path_factory.mktemp("ttm"), dtype, seed, batch)
    assert type(rustml_nb.from_pretrained(folder)).__name__ == "TinyTimeMixerForPrediction"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("norm_mlp", ["LayerNorm", "BatchNorm"])
def test_every_switch_at_once(tmp_path, dtype, norm_mlp):
    """The frequency token in front, the raw-patch residual (which gives the token's row its bias alone),
    positions, the base norm over each series' tokens (r3's enable_base_norm_always), self-attention, channel
    mixing and adaptive levels in encoder and decoder, together."""
    kwargs = dict(context_length=48, patch_length=8, patch_stride=8, d_model=32, num_layers=2, num_input_channels=3,
                  adaptive_patching_levels=3, decoder_d_model=16, decoder_num_layers=2,
                  decoder_adaptive_patching_levels=2, mode="mix_channel", decoder_mode="mix_channel",
                  resolution_prefix_tuning=True, decoder_raw_residual=True, use_positional_encoding=True,
                  self_attn=True, self_attn_heads=2, norm_mlp=norm_mlp, prediction_length=7,
                  prediction_channel_indices=[2, 0], prediction_filter_length=5, enable_base_norm_always=True)
    reference = build_reference(seed=5, **kwargs)
    check_parity(reference, kwargs, tmp_path, dtype, 5, 4)


@pytest.mark.parametrize("length", [40, 64, 100])
def test_other_lengths_are_cut_or_padded_as_granite_tsfm_does(tmp_path, length):
    """Longer histories keep their last context_length steps; shorter ones are padded in front with zeros,
    observed when no mask is given, missing when one is."""
    kwargs = dict(context_length=64, patch_length=8, patch_stride=8, d_model=16, num_layers=1, decoder_d_model=8,
                  decoder_num_layers=1, prediction_length=5, num_input_channels=2, adaptive_patching_levels=2)
    reference = build_reference(seed=3, **kwargs)
    folder = save(reference, tmp_path)
    rng = np.random.default_rng(0)
    values, tokens = inputs(kwargs, rng, 3, length)
    ours, theirs = run_both(folder, reference, values, tokens, "float64")
    compare_outputs(ours, theirs, "float64")
    mask = (rng.random(values.shape) > 0.2).astype(np.float64)
    ours, theirs = run_both(folder, reference, values, tokens, "float64", mask)
    compare_outputs(ours, theirs, "float64")
    assert ours.input_data.shape == (3, 64, 2)


@pytest.mark.parametrize("in_weights", [True, False])
def test_a_base_norm_the_config_does_not_describe_is_reported(tmp_path, in_weights):
    """enable_base_norm_always is read off the weights (encoder.base_norm) and compared with config.json."""
    import json

    kwargs = dict(num_input_channels=2, context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1,
                  prediction_length=4, enable_base_norm_always=in_weights)
    folder = save(build_reference(seed=2, **kwargs), tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["enable_base_norm_always"] = not in_weights
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(rustml_nb.ArchitectureMismatchError,
                       match=f"enable_base_norm_always or multi_scale: config says {not in_weights}, "
                             f"weights say {in_weights}"):
        rustml_nb.from_pretrained(folder)


@pytest.mark.parametrize("in_weights, in_config", [("glu", "softmax"), ("sigmoid", "glu")])
def test_a_glu_gate_the_config_does_not_describe_is_reported(tmp_path, in_weights, in_config):
    """A GLU gate's Linear has twice the outputs of the other modes' (which look alike in the weights)."""
    import json

    kwargs = dict(num_input_channels=2, context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1,
                  prediction_length=4, gate_mode=in_weights)
    folder = save(build_reference(seed=2, **kwargs), tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["gate_mode"] = in_config
    (folder / "config.json").write_text(json.dumps(config))
    want, have = (1, 2) if in_weights == "glu" else (2, 1)
    with pytest.raises(rustml_nb.ArchitectureMismatchError, match=rf"gate_mode \(gate outputs per input: 2 for glu\): "
                                                                   rf"config says {want}, weights say {have}"):
        rustml_nb.from_pretrained(folder)


def test_register_context_gating_fails_in_granite_tsfm():
    """Pinned: granite-tsfm 0.3.11's gates with use_register_context_gating need a context none of its blocks
    passes, so such a model cannot run there (rustml_nb refuses the config, see above)."""
    reference = build_reference(context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1,
                                prediction_length=4, use_register_context_gating=True)
    with pytest.raises(ValueError, match="no context tensor was provided"), torch.no_grad():
        reference(past_values=torch.zeros(1, 32, 1))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_r3_token_at_once(tmp_path, dtype):
    """r3's tokens together, in their order: FFT tokens (one per selected bin, through the MLP, the zero
    frequency left out), register tokens, the frequency token, then three scales' patches; positions over them
    all, the base norm multi_scale brings, self-attention and channel mixing over every token."""
    kwargs = dict(context_length=64, patch_length=8, patch_stride=8, d_model=24, num_layers=2, num_input_channels=2,
                  adaptive_patching_levels=2, decoder_d_model=16, decoder_num_layers=1, prediction_length=6,
                  use_positional_encoding=True, multi_scale=True, register_tokens=2, resolution_prefix_tuning=True,
                  fft_length=3, use_fft_embedding=False, fft_ignore_dc=True, self_attn=True, mode="mix_channel")
    config = TinyTimeMixerConfig(**kwargs)
    reference = build_reference(seed=6, **kwargs)
    assert (config.scale_patches, config.num_tokens) == ([1, 2, 4, 8], 3 + 2 + 1 + 15)
    assert config.num_tokens == reference.config.num_patches  # granite-tsfm's count of every token
    check_parity(reference, kwargs, tmp_path, dtype, 6, 3)


def test_fft_tokens_of_equal_magnitudes_take_the_lower_bin_first(tmp_path):
    """A constant series scales to zeros: every bin's magnitude is 0, and torch's topk then returns bins in an
    order of its own, which depends on k and the bin count (170, 172, 171, 173, 169 for 5 of 257 bins).
    rustml_nb takes the lowest bins, in order."""
    from rustml_nb.models.tinytimemixer import forward

    kwargs = dict(context_length=32, patch_length=8, patch_stride=8, d_model=8, prediction_length=4, fft_length=5)
    model = rustml_nb.from_pretrained(save(build_reference(seed=1, **kwargs), tmp_path), dtype="float64")
    block = np.zeros((model.config.num_tokens, 8))
    values, loc, scale = np.full((1, 32, 1), 5.0), np.full((1, 1, 1), 5.0), np.ones((1, 1, 1))
    forward.add_fft_tokens(values, loc, scale, 0, 1, model.config, model.weights.spectral, block)
    np.testing.assert_array_equal(block[:5], model.weights.spectral.embedding[:5])
    np.testing.assert_array_equal(block[5:], 0)
    assert torch.topk(torch.zeros(1, 257), 5).indices.tolist() == [[170, 172, 171, 173, 169]]  # torch's (pinned)


def test_fft_token_mlp_fails_in_float64_in_granite_tsfm():
    """Pinned: granite-tsfm's FFT-token MLP (use_fft_embedding=False) takes the bins' positions as float32, so a
    float64 model fails; rustml_nb computes them as granite-tsfm does in float32 and casts them to the dtype
    (the parity tests give the reference the same cast, build_reference's to_weight_dtype)."""
    module = granite()
    config = module.TinyTimeMixerConfig(context_length=32, patch_length=8, patch_stride=8, d_model=8,
                                        prediction_length=4, fft_length=2, use_fft_embedding=False)
    model = module.TinyTimeMixerForPrediction(config).eval().double()
    with pytest.raises(RuntimeError, match="same dtype"), torch.no_grad():
        model(past_values=torch.randn(1, 32, 1, dtype=torch.float64))


@pytest.mark.parametrize("extra", [dict(register_tokens=2), dict(fft_length=2), dict(multi_scale=True)])
def test_r3_tokens_with_the_raw_patch_residual_fail_in_granite_tsfm_and_are_refused(extra):
    """Pinned: granite-tsfm adds the raw patches' embedding (decoder_raw_residual) to every token, which with
    r3's extra tokens is more rows than there are patches, so its forward fails; rustml_nb refuses the config."""
    kwargs = dict(context_length=32, patch_length=8, patch_stride=8, d_model=8, decoder_d_model=8,
                  prediction_length=4, decoder_raw_residual=True, **extra)
    with pytest.raises(RuntimeError, match="size of tensor"), torch.no_grad():
        build_reference(**kwargs)(past_values=torch.randn(1, 32, 1))
    with pytest.raises(ConfigError, match="decoder_raw_residual with register tokens, FFT tokens or multi-scale"):
        TinyTimeMixerConfig(**kwargs)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_multi_scale_over_a_context_patches_do_not_divide(tmp_path, dtype):
    """Context 36, patches of 8: the patched input holds the last 32 steps, whose scales give 4, 2 and 1
    patches, the count granite-tsfm's config makes of the whole context."""
    kwargs = dict(context_length=36, patch_length=8, patch_stride=8, d_model=16, prediction_length=4,
                  multi_scale=True, decoder_d_model=8, num_input_channels=2)
    reference = build_reference(seed=4, **kwargs)
    assert TinyTimeMixerConfig(**kwargs).num_tokens == reference.config.num_patches == 7
    check_parity(reference, kwargs, tmp_path, dtype, 4, 2)


@pytest.mark.parametrize("field, in_weights, in_config, label", [
    ("register_tokens", 2, 3, "register_tokens"), ("fft_length", 2, 0, "fft_length > 0"),
    ("multi_scale", True, False, "multi_scale .scales.")])
def test_r3_tokens_the_config_does_not_describe_are_reported(tmp_path, field, in_weights, in_config, label):
    import json

    kwargs = dict(context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1, prediction_length=4,
                  use_decoder=False, **{field: in_weights})
    folder = save(build_reference(seed=2, **kwargs), tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config[field] = in_config
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(rustml_nb.ArchitectureMismatchError, match=label):
        rustml_nb.from_pretrained(folder)


MULTI_QUANTILE_OPTIONS = [dict(), dict(mq_kernel_size=5, mq_q50_type="mean", mq_hidden=4),
                          dict(quantile_levels=[0.5, 0.05, 0.25, 0.75, 0.95]), dict(mq_use_decoder_pool=True),
                          dict(mq_use_decoder_pool=True, mq_cond_mode="concat"),
                          dict(mq_use_decoder_pool=True, mq_cond_path="flatten", mq_decoder_d_model=3),
                          dict(mq_use_decoder_pool=True, mq_cond_path="flatten", mq_cond_mode="concat",
                               use_decoder=False, d_model=8),
                          dict(enable_forecast_channel_mixing=True, fcm_context_length=1, prediction_filter_length=4),
                          dict(prediction_channel_indices=[1], register_tokens=2)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("options", MULTI_QUANTILE_OPTIONS)
def test_multi_quantile_head_matches_granite_tsfm(tmp_path, options, dtype):
    """r3's multi-quantile head, every option: its kernel, hidden width and median anchor; other (unsorted)
    levels; the decoder's summary pooled or flattened, added or concatenated (and the backbone's, without a
    decoder); after forecast channel mixing; over some channels. quantile_outputs [batch, levels, horizon,
    channels] ascending, prediction_outputs the median."""
    kwargs = dict(dict(context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1,
                       num_input_channels=2, decoder_d_model=8, decoder_num_layers=1, prediction_length=6,
                       multi_quantile_head=True), **options)
    reference = build_reference(seed=3, **kwargs)
    ours, _ = check_parity(reference, kwargs, tmp_path, dtype, 3, 3)
    levels = len(kwargs.get("quantile_levels", range(9)))
    horizon, channels = kwargs.get("prediction_filter_length", 6), ours.prediction_outputs.shape[2]
    assert ours.quantile_outputs.shape == (3, levels, horizon, channels)
    assert np.all(np.diff(ours.quantile_outputs, axis=1) > 0)
    np.testing.assert_array_equal(ours.quantile_outputs[:, levels // 2], ours.prediction_outputs)


@pytest.mark.parametrize("fields, message", [
    (dict(mq_kernel_size=4), "mq_kernel_size .4. must be odd"),
    (dict(prediction_length=1), "multi_quantile_head with a horizon of 1 step"),
    (dict(mq_use_decoder_pool=True, use_decoder=False, d_model=16, decoder_d_model=8),
     "mq_use_decoder_pool without a decoder"),
    (dict(mq_use_decoder_pool=True, num_input_channels=2, prediction_channel_indices=[0]),
     "mq_use_decoder_pool with forecasts of fewer channels"),
])
def test_multi_quantile_head_refuses_what_granite_tsfm_cannot_run(fields, message):
    """Pinned: each of these fails in granite-tsfm's forward; rustml_nb refuses the config by name."""
    kwargs = dict(dict(context_length=32, patch_length=8, patch_stride=8, prediction_length=6,
                       multi_quantile_head=True), **fields)
    with pytest.raises((RuntimeError, ValueError)), torch.no_grad():
        build_reference(**kwargs)(past_values=torch.randn(2, 32, kwargs.get("num_input_channels", 1)))
    with pytest.raises(ConfigError, match=message):
        TinyTimeMixerConfig(**kwargs)


@pytest.mark.parametrize("levels", [[0.1, 0.5], [0.2, 0.5, 0.9, 0.95]])
def test_multi_quantile_levels_must_be_odd_around_the_median(levels):
    with pytest.raises(ConfigError, match="quantile_levels must be an odd number of levels around 0.5"):
        TinyTimeMixerConfig(multi_quantile_head=True, quantile_levels=levels)


def test_forecasts_take_the_multi_quantile_heads_levels(tmp_path):
    """forecast(DataFrame, quantiles=...) adds {channel}_q{level} columns from quantile_outputs, for levels the
    head has; others are named in the error, and a point head has none."""
    import pandas as pd

    kwargs = dict(context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1, decoder_d_model=8,
                  prediction_length=4, num_input_channels=1, multi_quantile_head=True)
    model = rustml_nb.from_pretrained(save(build_reference(seed=7, **kwargs), tmp_path), dtype="float64")
    history = pd.DataFrame(np.random.default_rng(2).normal(size=(40, 2)), columns=["a", "b"],
                           index=pd.date_range("2024-01-01", periods=40, freq="h"))
    forecast = model.forecast(history, quantiles=[0.1, 0.9])
    assert list(forecast.columns) == ["a", "b", "a_q0.1", "a_q0.9", "b_q0.1", "b_q0.9"]
    output = model(history.to_numpy()[None])
    np.testing.assert_array_equal(forecast[["a", "b"]].to_numpy(), output.prediction_outputs[0])
    np.testing.assert_array_equal(forecast[["a_q0.1", "b_q0.1"]].to_numpy(), output.quantile_outputs[0, 0])
    np.testing.assert_array_equal(forecast[["a_q0.9", "b_q0.9"]].to_numpy(), output.quantile_outputs[0, 8])
    with pytest.raises(InputError, match=r"forecasts the levels \[0.1, 0.2, .*0.9\], not 0.25"):
        model.forecast(history, quantiles=[0.25])
    point = rustml_nb.from_pretrained(save(build_reference(seed=7, **dict(kwargs, multi_quantile_head=False)),
                                           tmp_path / "point"))
    with pytest.raises(ConfigError, match="has a point head and no multi-quantile head"):
        point.forecast(history, quantiles=[0.1])


def test_a_multi_quantile_head_the_config_does_not_describe_is_reported(tmp_path):
    import json

    kwargs = dict(context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1, prediction_length=4,
                  multi_quantile_head=True, quantile_levels=[0.25, 0.5, 0.75])
    folder = save(build_reference(seed=2, **kwargs), tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["multi_quantile_head"] = False
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(rustml_nb.ArchitectureMismatchError,
                       match=r"multi_quantile_head \(quantile levels\): config says 0, weights say 3"):
        rustml_nb.from_pretrained(folder)


def run_decomposed(folder, reference, values, dtype, **inputs):
    ours = rustml_nb.from_pretrained(folder, dtype=dtype)
    reference = reference.to(TORCH_DTYPES[dtype])
    torch_inputs = {name: None if value is None else torch.from_numpy(np.asarray(value)) for name, value in inputs.items()}
    with torch.no_grad():
        theirs = reference(past_values=torch.from_numpy(values.astype(dtype)), **torch_inputs)
    return ours(values.astype(dtype), **inputs), theirs


@st.composite
def decomposed_kwargs(draw):
    kwargs = draw(ttm_kwargs())
    if "prediction_channel_indices" in kwargs:  # unsorted ones mispair channels in granite-tsfm (test below)
        kwargs["prediction_channel_indices"] = sorted(kwargs["prediction_channel_indices"])
    kwargs["decompose"] = True
    patch = kwargs["patch_length"]
    if draw(st.booleans()):
        kwargs["residual_context_length"] = patch * draw(st.integers(1, kwargs["context_length"] // patch)) + patch // 2
    if draw(st.booleans()):
        trend_patch = draw(st.sampled_from([4, 8]))
        kwargs.update(trend_patch_length=trend_patch, trend_patch_stride=trend_patch,
                      trend_d_model=draw(st.sampled_from([8, 16])), trend_num_layers=draw(st.integers(1, 2)),
                      trend_adaptive_patching_levels=draw(st.integers(0, 1)),
                      trend_register_tokens=draw(st.sampled_from([None, 0, 2])),
                      trend_multi_scale=draw(st.sampled_from([None, False, True])))
        if kwargs["context_length"] <= trend_patch or kwargs["context_length"] < 2 * trend_patch:
            kwargs["trend_patch_length"] = kwargs["trend_patch_stride"] = patch
    kwargs["combine_quantiles_via_variance"] = draw(st.booleans())
    if kwargs.get("mq_use_decoder_pool") or kwargs["decoder_raw_residual"]:
        kwargs["mq_use_decoder_pool"] = kwargs["decoder_raw_residual"] = False  # kept simple: the trend's widths vary
    return kwargs


@given(decomposed_kwargs(), st.sampled_from(["float64", "float32"]), st.integers(1, 3), st.integers(0, 2 ** 16))
def test_decomposed_prediction_matches_granite_tsfm(tmp_path_factory, kwargs, dtype, batch, seed):
    """TinyTimeMixerForDecomposedPrediction (r3's -dec- revisions): the scaled history's robust trend and the
    residual around it, each through its forecaster (the trend's with its trend_* changes, the residual's over
    residual_context_length steps), every output field."""
    reference = build_reference("TinyTimeMixerForDecomposedPrediction", seed=seed, **kwargs)
    folder = save(reference, tmp_path_factory.mktemp("dec"))
    rng = np.random.default_rng(seed)
    values, tokens = inputs(kwargs, rng, batch)
    values = values + np.cumsum(rng.normal(size=values.shape), axis=1)  # a wandering trend
    extra = dict(freq_token=tokens) if kwargs["resolution_prefix_tuning"] else {}
    ours, theirs = run_decomposed(folder, reference, values, dtype, **extra)
    assert type(rustml_nb.from_pretrained(folder)).__name__ == "TinyTimeMixerForDecomposedPrediction"
    truth = run_decomposed(folder, reference, values, "float64", **extra)[1] if dtype == "float32" else None
    compare_outputs(ours, theirs, dtype, truth)


@given(st.lists(st.sampled_from([-2.0, -1.0, -0.0, 0.0, 0.5, 1.0, 3.0]) | st.floats(-1e6, 1e6), min_size=1, max_size=60),
       st.sampled_from(["float64", "float32"]))
def test_lower_median_is_the_lower_middle_of_the_sorted_values(values, dtype):
    """The trend's median (a quickselect): the ((n - 1) // 2)-th smallest, as torch.median, with ties and either
    parity of n; its input is left as it was."""
    from rustml_nb.models.tinytimemixer.forward import lower_median

    array = np.array(values, dtype=dtype)
    given_values = array.copy()
    median = lower_median(array, np.empty_like(array))
    assert median == np.sort(array)[(array.size - 1) // 2] == torch.from_numpy(array).median().item()
    assert np.array_equal(array, given_values)


@given(st.integers(3, 90), st.integers(1, 3), st.integers(1, 3), st.sampled_from(["float64", "float32"]),
       st.integers(0, 2 ** 16))
def test_robust_trend_matches_granite_tsfms_robust_lowess_like(steps, batch, channels, dtype, seed):
    """The decomposed model's trend kernel against granite-tsfm's robust_lowess_like on series with a wandering
    level, heavy tails and outliers, odd and even lengths (lower medians), from the shortest (3 steps, a
    window of 3) up; and the same, bit for bit, whether its series are split among threads or not."""
    from rustml_nb.models.tinytimemixer.decomposed import robust_trend

    rng = np.random.default_rng(seed)
    values = np.cumsum(rng.normal(size=(batch, steps, channels)), axis=1) + rng.standard_t(1.5, (batch, steps, channels))
    values[rng.random(values.shape) < 0.05] *= 50
    theirs = granite().robust_lowess_like(torch.from_numpy(values.astype(dtype)))[0].numpy()
    ours = robust_trend(values.astype(dtype))
    truth = granite().robust_lowess_like(torch.from_numpy(values))[0].numpy() if dtype == "float32" else None
    compare_outputs(SimpleNamespace(trend=ours), SimpleNamespace(trend=theirs), dtype,
                    None if truth is None else SimpleNamespace(trend=truth))
    threads = rustml_nb.get_num_threads()
    try:
        rustml_nb.set_num_threads(1)
        assert np.array_equal(robust_trend(values.astype(dtype)), ours)
    finally:
        rustml_nb.set_num_threads(threads)


@pytest.mark.parametrize("length", [20, 48, 70])
def test_decomposed_prediction_over_some_channels_and_other_lengths(tmp_path, length):
    """Scaled over every given step (granite-tsfm's decomposed model scales before its forecasters cut or pad),
    forecasting some channels: the trend and residual inputs hold those channels."""
    kwargs = dict(context_length=48, patch_length=8, patch_stride=8, d_model=16, num_layers=1, num_input_channels=3,
                  decoder_d_model=8, prediction_length=5, decompose=True, prediction_channel_indices=[0, 2],
                  residual_context_length=24, multi_quantile_head=True, combine_quantiles_via_variance=True)
    reference = build_reference("TinyTimeMixerForDecomposedPrediction", seed=8, **kwargs)
    folder = save(reference, tmp_path)
    values = np.random.default_rng(8).normal(size=(2, length, 3)).cumsum(axis=1)
    for dtype in ("float64", "float32"):
        ours, theirs = run_decomposed(folder, reference, values, dtype)
        truth = run_decomposed(folder, reference, values, "float64")[1] if dtype == "float32" else None
        compare_outputs(ours, theirs, dtype, truth)
        assert ours.trend_input.shape == (2, length, 2) and ours.residual_input.shape == (2, min(24, length), 2)


def test_unsorted_prediction_channels_mispair_channels_in_granite_tsfms_decomposed_model(tmp_path):
    """Pinned: granite-tsfm sorts prediction_channel_indices inside each forecaster's config but not in the
    decomposed model's own, which then scales channel 0's forecast with channel 2's loc and scale. rustml_nb
    sorts them everywhere, so [2, 0] forecasts as [0, 2] does (the evident intent)."""
    kwargs = dict(context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1, num_input_channels=3,
                  decoder_d_model=8, prediction_length=4, decompose=True)
    unsorted = build_reference("TinyTimeMixerForDecomposedPrediction", seed=8, prediction_channel_indices=[2, 0],
                               **kwargs).double()
    in_order = build_reference("TinyTimeMixerForDecomposedPrediction", seed=8, prediction_channel_indices=[0, 2],
                               **kwargs).double()
    values = np.random.default_rng(8).normal(size=(2, 32, 3)).cumsum(axis=1) * 5 + np.array([0.0, 10.0, 100.0])
    with torch.no_grad():
        theirs_unsorted = unsorted(past_values=torch.from_numpy(values)).prediction_outputs.numpy()
        theirs_in_order = in_order(past_values=torch.from_numpy(values)).prediction_outputs.numpy()
    assert np.abs(theirs_unsorted - theirs_in_order).max() > 1
    ours = rustml_nb.from_pretrained(save(unsorted, tmp_path), dtype="float64")(values).prediction_outputs
    np.testing.assert_allclose(ours, theirs_in_order, rtol=1e-9, atol=1e-9)


def test_decomposed_checkpoints_map_both_ways_and_report_each_forecasters_disagreements(tmp_path):
    import json

    kwargs = dict(context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1, decoder_d_model=8,
                  prediction_length=4, decompose=True, trend_d_model=8, residual_context_length=16)
    reference = build_reference("TinyTimeMixerForDecomposedPrediction", **kwargs)
    state = {key: value.numpy() for key, value in reference.state_dict().items()}
    result = map_tinytimemixer_weights(state)
    assert result.unmapped == [] and len(result.mapped) == len(state)
    assert {name.split(".")[0] for name in result.mapped} == {"trend", "residual"}
    for ours, key in result.sources.items():
        assert hf_name(ours) == key
    config = TinyTimeMixerConfig(**kwargs)
    for part, part_config in (("trend.", config.trend_config()), ("residual.", config.residual_config())):
        shapes = {name[len(part):]: tuple(a.shape) for name, a in result.mapped.items() if name.startswith(part)}
        assert shapes == expected_shapes(part_config, "prediction")
    assert rustml_nb.models.tinytimemixer.check_tinytimemixer_compatibility(result.mapped, config).mismatches == []
    folder = save(reference, tmp_path)
    values = json.loads((folder / "config.json").read_text())
    assert values["architectures"] == ["TinyTimeMixerForDecomposedPrediction"]
    (folder / "config.json").write_text(json.dumps({**values, "trend_d_model": 16}))
    with pytest.raises(rustml_nb.ArchitectureMismatchError, match="trend_forecaster: .*d_model: config says 16, weights "
                                                                   "say 8"):
        rustml_nb.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**values, "architectures": None}))  # the weights tell the class
    assert type(rustml_nb.from_pretrained(folder)).__name__ == "TinyTimeMixerForDecomposedPrediction"


def test_decomposed_forecasts_take_dataframes_and_the_heads_levels(tmp_path):
    import pandas as pd

    kwargs = dict(context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1, decoder_d_model=8,
                  prediction_length=4, decompose=True, multi_quantile_head=True, quantile_levels=[0.2, 0.5, 0.8],
                  resolution_prefix_tuning=True, frequency_token_vocab_size=10)
    reference = build_reference("TinyTimeMixerForDecomposedPrediction", seed=9, **kwargs)
    model = rustml_nb.from_pretrained(save(reference, tmp_path), dtype="float64")
    history = pd.DataFrame(np.random.default_rng(3).normal(size=(40, 2)).cumsum(axis=0), columns=["a", "b"],
                           index=pd.date_range("2024-01-01", periods=40, freq="h"))
    forecast = model.forecast(history, quantiles=[0.2, 0.8])
    assert list(forecast.columns) == ["a", "b", "a_q0.2", "a_q0.8", "b_q0.2", "b_q0.8"]
    with torch.no_grad():
        expected = reference.double()(torch.from_numpy(history.to_numpy()[None, -32:].copy()),  # its context, as
                                      freq_token=torch.tensor([7]))  # granite-tsfm's pipeline gives it
    np.testing.assert_allclose(forecast[["a", "b"]].to_numpy(), expected.prediction_outputs.numpy()[0], rtol=1e-9,
                               atol=1e-9)
    np.testing.assert_allclose(forecast[["a_q0.8", "b_q0.8"]].to_numpy(), expected.quantile_outputs.numpy()[0, 2],
                               rtol=1e-9, atol=1e-9)
    with pytest.raises(InputError, match="at least 3 steps"):
        model(np.ones((1, 2, 2)), freq_token=[1])


def test_decomposed_checkpoint_keys_outside_its_forecasters_are_named(tmp_path):
    from safetensors.numpy import load_file, save_file

    kwargs = dict(context_length=32, patch_length=8, patch_stride=8, d_model=8, prediction_length=4, decompose=True)
    folder = save(build_reference("TinyTimeMixerForDecomposedPrediction", **kwargs), tmp_path)
    tensors = load_file(folder / "model.safetensors")
    save_file({**tensors, "scaler.extra": np.zeros(2, np.float32)}, folder / "model.safetensors")
    with pytest.raises(rustml_nb.WeightMappingError, match="outside its trend and residual forecasters: .'scaler.extra'"):
        rustml_nb.from_pretrained(folder)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_layers_over_a_single_token_mix_no_patches(tmp_path, dtype):
    """A context of one patch: granite-tsfm's layers over one token have no patch mixer (nor self-attention);
    its adaptive levels split the token into 2 and 4 rows, which do mix. So does forecast channel mixing's
    mixer over a single channel (no exogenous ones)."""
    kwargs = dict(context_length=12, patch_length=8, patch_stride=8, d_model=16, num_layers=2, num_input_channels=2,
                  adaptive_patching_levels=3, mode="mix_channel", self_attn=True, self_attn_heads=2,
                  decoder_d_model=8, decoder_num_layers=1, prediction_length=6, prediction_channel_indices=[1],
                  enable_forecast_channel_mixing=True, fcm_use_mixer=True, fcm_context_length=1)
    config = TinyTimeMixerConfig(**kwargs)
    assert config.num_tokens == 1 and len(config.mixed_channels) == 1
    assert not any(".patch_mixer." in name for name in expected_shapes(config, "prediction")
                   if name.startswith(("encoder.levels.2.", "decoder.", "head.fcm.")))
    reference = build_reference(seed=11, **kwargs)
    check_parity(reference, kwargs, tmp_path, dtype, 11, 3)


def test_backbone_alone_from_a_forecasting_checkpoint(tmp_path):
    kwargs = dict(RELEASED_512_96, context_length=256, d_model=48)
    reference = build_reference(seed=1, **kwargs)
    folder = save(reference, tmp_path)
    model = rustml_nb.models.tinytimemixer.TinyTimeMixerModel.from_pretrained(folder, dtype="float64")
    values, _ = inputs(kwargs, np.random.default_rng(1), 2)
    with torch.no_grad():
        theirs = reference.double().backbone(torch.from_numpy(values))
    compare_outputs(model(values), theirs, "float64")


def test_released_512_96_shape_has_its_parameter_count_and_parity(tmp_path):
    reference = build_reference(seed=2, **RELEASED_512_96)
    assert sum(p.numel() for p in reference.parameters()) == 805_280
    folder = save(reference, tmp_path)
    assert rustml_nb.from_pretrained(folder).architecture.compatible
    values, tokens = inputs(RELEASED_512_96, np.random.default_rng(2), 3)
    ours, theirs = run_both(folder, reference, values, tokens, "float32")
    _, truth = run_both(folder, reference, values, tokens, "float64")
    compare_outputs(ours, theirs, "float32", truth)


@given(ttm_kwargs())
def test_mapping_is_a_bijection_and_detection_agrees(kwargs):
    reference = build_reference(**kwargs)
    state = {key: value.numpy() for key, value in reference.state_dict().items()}
    result = map_tinytimemixer_weights(state)
    assert result.unmapped == [] and len(result.mapped) == len(state)
    for ours, key in result.sources.items():
        assert hf_name(ours) == key
    config = TinyTimeMixerConfig(**kwargs)
    assert {name: tuple(array.shape) for name, array in result.mapped.items()} == expected_shapes(config, "prediction")
    check = rustml_nb.models.tinytimemixer.check_tinytimemixer_compatibility(result.mapped, config)
    assert check.mismatches == []


def test_config_has_every_granite_field_with_its_default():
    theirs = granite().TinyTimeMixerConfig()
    ours = TinyTimeMixerConfig()
    skipped = {"architectures", "masked_context_length", "gate_mode", "gate_groups", "use_register_context_gating",
               "get_one_freq_emb", "fft_ignore_dc", "fft_d_freq_min", "fft_d_freq_max"}  # read with getattr
    for field in dataclasses.fields(TinyTimeMixerConfig):
        if field.name not in skipped:
            assert getattr(ours, field.name) == getattr(theirs, field.name), field.name
    import inspect
    arguments = set(inspect.signature(granite().TinyTimeMixerConfig.__init__).parameters) - {"self", "kwargs"}
    missing = arguments - {f.name for f in dataclasses.fields(TinyTimeMixerConfig)}
    assert missing == set()


@pytest.mark.parametrize("field, value, message", [
    ("categorical_vocab_size_list", [3], "static categorical inputs need decoder_mode 'mix_channel'"),
    ("categorical_vocab_size_list", [3, 0], "categorical_vocab_size_list must be positive integers"),
    ("loss", "nll", "granite-tsfm 0.3.11 refuses"),
    ("patch_stride", 4, r"patch_length \(8\) and patch_stride \(4\) must be equal"),
    ("prediction_filter_length", 20, r"prediction_filter_length must be in \[1, prediction_length = 16\]"),
    ("gate_mode", "tanh", r"gate_mode must be one of \['softmax', 'sigmoid', 'glu', 'group_sigmoid'\], got 'tanh'"),
    ("use_register_context_gating", True, "granite-tsfm 0.3.11 cannot run it"),
])
def test_options_not_run_are_refused_by_name(field, value, message):
    with pytest.raises(ConfigError, match=message):
        TinyTimeMixerConfig.from_dict({"model_type": "tinytimemixer", field: value})


@pytest.mark.parametrize("fields, message", [
    (dict(fcm_context_length=1, prediction_length=1), "horizon .* of at least 2, as granite-tsfm requires"),
    (dict(fcm_use_mixer=True, fcm_context_length=0, num_input_channels=2), "fcm_use_mixer with fcm_context_length 0"),
])
def test_forecast_channel_mixing_refuses_what_cannot_run(fields, message):
    with pytest.raises(ConfigError, match=message):
        TinyTimeMixerConfig(enable_forecast_channel_mixing=True, **fields)


def test_frequency_token_is_required_and_checked(tmp_path):
    kwargs = dict(context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1, decoder_d_model=8,
                  decoder_num_layers=1, prediction_length=4, resolution_prefix_tuning=True, frequency_token_vocab_size=3)
    model = rustml_nb.from_pretrained(save(build_reference(**kwargs), tmp_path))
    values = np.zeros((2, 32, 1), np.float32)
    with pytest.raises(InputError, match="needs the data's frequency token"):
        model(values)
    with pytest.raises(InputError, match=r"freq_token must be in \[0, 3\)"):
        model(values, freq_token=[0, 3])
    with pytest.raises(InputError, match="expected 2 integer"):
        model(values, freq_token=[0.5, 1])
    assert model(values, freq_token=1).prediction_outputs.shape == (2, 4, 1)


@pytest.mark.parametrize("channels", [1, 4])
def test_any_number_of_channels_when_they_never_mix(tmp_path, channels):
    """A common_channel checkpoint (the released ones say num_input_channels 1) runs any number of channels, as
    granite-tsfm does; prediction_channel_indices must name channels the input has; mix_channel checkpoints
    take exactly num_input_channels."""
    kwargs = dict(context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1, decoder_d_model=8,
                  decoder_num_layers=1, prediction_length=4, num_input_channels=2, adaptive_patching_levels=2,
                  scaling="mean")
    reference = build_reference(seed=6, **kwargs)
    folder = save(reference, tmp_path / "common")
    values = np.random.default_rng(1).normal(size=(3, 32, channels)) * 2 + 1
    ours, theirs = run_both(folder, reference, values, None, "float64")
    assert ours.prediction_outputs.shape == (3, 4, channels)
    compare_outputs(ours, theirs, "float64")
    backbone = rustml_nb.models.tinytimemixer.TinyTimeMixerModel.from_pretrained(folder, dtype="float64")
    assert backbone(values).last_hidden_state.shape == (3, channels, 4, 16)

    indexed = save(build_reference(seed=6, prediction_channel_indices=[1], **kwargs), tmp_path / "indexed")
    model = rustml_nb.from_pretrained(indexed)
    assert model(values[..., :1].repeat(3, axis=2)).prediction_outputs.shape == (3, 4, 1)
    with pytest.raises(InputError, match=r"1 channel\(s\); the checkpoint's prediction_channel_indices \[1\]"):
        model(values[..., :1])

    mixing = save(build_reference(seed=6, **{**kwargs, "decoder_mode": "mix_channel"}), tmp_path / "mixing")
    with pytest.raises(InputError, match=r"expected \[batch, 32, 2\]"):
        rustml_nb.from_pretrained(mixing)(np.zeros((1, 32, 3)))
    rustml_nb.models.tinytimemixer.TinyTimeMixerModel.from_pretrained(mixing)(np.zeros((1, 32, 3)))  # no decoder


def test_dataframe_forecasts_hold_the_filtered_horizon_and_take_the_frequency_token(tmp_path):
    """forecast(DataFrame): prediction_filter_length steps, the columns of any number of channels, and for a
    resolution_prefix_tuning checkpoint the frequency token of the history's step (hourly: 7)."""
    import pandas as pd

    kwargs = dict(context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1, decoder_d_model=8,
                  decoder_num_layers=1, prediction_length=6, prediction_filter_length=4, num_input_channels=1,
                  resolution_prefix_tuning=True, frequency_token_vocab_size=10)
    reference = build_reference(seed=7, **kwargs)
    model = rustml_nb.from_pretrained(save(reference, tmp_path), dtype="float64")
    history = pd.DataFrame(np.random.default_rng(2).normal(size=(40, 3)), columns=["a", "b", "c"],
                           index=pd.date_range("2024-01-01", periods=40, freq="h"))
    forecast = model.forecast(history)
    assert list(forecast.columns) == ["a", "b", "c"]
    assert list(forecast.index) == list(pd.date_range("2024-01-02 16:00", periods=4, freq="h"))
    with torch.no_grad():
        expected = reference.double()(torch.from_numpy(history.to_numpy()[None, -32:].copy()),
                                      freq_token=torch.tensor([7])).prediction_outputs.numpy()[0]
    np.testing.assert_allclose(forecast.to_numpy(), expected, rtol=1e-9, atol=1e-9)
    with pytest.raises(InputError, match="give the history timestamps"):
        model.forecast(history.reset_index(drop=True))


def forecast_through_cli(folder, tmp_path):
    """(history, forecast): 40 hourly steps of 2 channels written to CSV and forecast by ``rustml-nb forecast``
    with the checkpoint in folder, the forecast read back."""
    from rustml_nb.cli import main
    import pandas as pd

    history = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 2)), columns=["a", "b"],
                           index=pd.date_range("2024-01-01", periods=40, freq="h"))
    history.to_csv(tmp_path / "history.csv", index_label="time")
    assert main(["forecast", str(folder), "--input", str(tmp_path / "history.csv"),
                 "--output", str(tmp_path / "forecast.csv")]) == 0
    return history, pd.read_csv(tmp_path / "forecast.csv", index_col=0)


def test_command_line_inspects_and_forecasts_a_checkpoint(tmp_path, capsys):
    from rustml_nb.cli import main

    kwargs = dict(context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1, decoder_d_model=8,
                  decoder_num_layers=1, prediction_length=4, num_input_channels=2, adaptive_patching_levels=2)
    folder = save(build_reference(seed=4, **kwargs), tmp_path)
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "backbone     1 layers x 2 level(s)" in out and "backbone.encoder.patcher.weight" in out
    history, forecast = forecast_through_cli(folder, tmp_path)
    assert main(["forecast", str(folder), "--input", str(tmp_path / "history.csv"),
                 "--future", str(tmp_path / "history.csv")]) == 1
    assert "reads no future values" in capsys.readouterr().err
    model = rustml_nb.from_pretrained(folder)
    np.testing.assert_allclose(forecast.to_numpy(), model(history.to_numpy()[-32:]).prediction_outputs, rtol=1e-5)
    capsys.readouterr()
    assert main(["parity", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "TinyTimeMixerForPrediction in float64: rustml_nb against granite-tsfm 0.3.11" in out
    assert "hidden state 0 " in out and "all within tolerance" in out


def test_command_line_inspects_forecasts_and_checks_an_r3_decomposed_checkpoint(tmp_path, capsys):
    from rustml_nb.cli import main

    kwargs = dict(context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1, decoder_d_model=8,
                  decoder_num_layers=1, prediction_length=4, num_input_channels=2, decompose=True, register_tokens=1,
                  multi_quantile_head=True, quantile_levels=[0.25, 0.5, 0.75], residual_context_length=16)
    folder = save(build_reference("TinyTimeMixerForDecomposedPrediction", seed=4, **kwargs), tmp_path)
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "r3           1 register tokens, multi-quantile head [0.25, 0.5, 0.75]" in out
    assert "decomposed   trend forecaster: patches of 8, d_model 16, 1 layers; residual forecaster: the last 16" in out
    history, forecast = forecast_through_cli(folder, tmp_path)
    model = rustml_nb.from_pretrained(folder)
    np.testing.assert_allclose(forecast.to_numpy(), model(history.to_numpy()[-32:]).prediction_outputs, rtol=1e-5)
    capsys.readouterr()
    assert main(["parity", str(folder), "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert "TinyTimeMixerForDecomposedPrediction in float32" in out and "all within tolerance" in out
    assert "trend_quantile_outputs" in out and "residual_input" in out


@pytest.mark.parametrize("class_name", ["TinyTimeMixerForPrediction", "TinyTimeMixerModel"])
def test_command_line_parity_with_frequency_tokens_and_a_bare_backbone(tmp_path, capsys, class_name):
    """rustml-nb parity gives both implementations the same frequency tokens, and builds granite-tsfm's bare
    TinyTimeMixerModel (whose from_pretrained fails under transformers 5) from its config and weights."""
    from rustml_nb.cli import main

    kwargs = dict(context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=2, decoder_d_model=8,
                  decoder_num_layers=1, prediction_length=4, num_input_channels=2, adaptive_patching_levels=2,
                  resolution_prefix_tuning=True, decoder_raw_residual=True)
    folder = save(build_reference(class_name, seed=8, **kwargs), tmp_path)
    assert main(["parity", str(folder), "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert f"{class_name} in float32" in out and "all within tolerance" in out
    # two levels of the encoder: input, split input, two layers, output; the decoder: adapter, raw residual, a layer
    assert out.count("hidden state ") == 2 * (2 + 3) + (3 if class_name == "TinyTimeMixerForPrediction" else 0)


@st.composite
def fcm_kwargs(draw):
    channels = draw(st.integers(2, 4))
    context = draw(st.integers(0, 2))
    kwargs = dict(context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1, decoder_d_model=8,
                  decoder_num_layers=1, prediction_length=6, num_input_channels=channels,
                  adaptive_patching_levels=draw(st.integers(0, 2)), enable_forecast_channel_mixing=True,
                  scaling=draw(st.sampled_from(["std", "mean", None])), fcm_context_length=context,
                  fcm_gated_attn=draw(st.booleans()), fcm_use_mixer=context > 0 and draw(st.booleans()),
                  fcm_mix_layers=draw(st.integers(1, 2)), fcm_prepend_past=draw(st.booleans()),
                  fcm_prepend_past_offset=draw(st.sampled_from([None, 1, 3])),  # 0: see the test below
                  norm_mlp=draw(st.sampled_from(["LayerNorm", "BatchNorm"])),
                  decoder_mode=draw(st.sampled_from(["common_channel", "mix_channel"])),
                  gate_mode=draw(st.sampled_from(["softmax", "sigmoid", "glu", "group_sigmoid"])))
    exogenous = draw(st.lists(st.integers(0, channels - 1), max_size=channels - 1, unique=True))
    if exogenous:
        kwargs["exogenous_channel_indices"] = exogenous
    others = [c for c in range(channels) if c not in exogenous]
    if draw(st.booleans()):
        kwargs["prediction_channel_indices"] = draw(st.lists(st.sampled_from(others), min_size=1, unique=True))
    if draw(st.booleans()):
        kwargs["prediction_filter_length"] = draw(st.integers(2 if context else 1, 6))
    if context == 0:  # granite-tsfm 0.3.11 runs this only with the gate (see the test below)
        kwargs["fcm_gated_attn"] = True
    if kwargs["fcm_use_mixer"] and draw(st.booleans()):
        kwargs.update(self_attn=True, self_attn_heads=draw(st.sampled_from([1, 2])))
    return kwargs


@given(fcm_kwargs(), st.sampled_from(["float64", "float32"]), st.integers(1, 3), st.integers(0, 2 ** 16))
def test_forecast_channel_mixing_matches_granite_tsfm(tmp_path_factory, kwargs, dtype, batch, seed):
    """Forecast channel mixing: exogenous channels' known future, windows around each forecast step (the past's
    last steps, an offset, zeros), the mixer across channels, the gate, its Linear and residual."""
    reference = build_reference(seed=seed, **kwargs)
    folder = save(reference, tmp_path_factory.mktemp("fcm"))
    rng = np.random.default_rng(seed)
    values, _ = inputs(kwargs, rng, batch, rng.integers(20, 40))
    future = rng.normal(size=(batch, 6, kwargs["num_input_channels"])) * 3 + 1
    ours = rustml_nb.from_pretrained(folder, dtype=dtype)

    def theirs(precision):
        with torch.no_grad():
            return reference.to(TORCH_DTYPES[precision])(
                past_values=torch.from_numpy(values.astype(precision)),
                future_values=torch.from_numpy(future.astype(precision)), output_hidden_states=True)

    compare_outputs(ours(values.astype(dtype), future_values=future.astype(dtype), output_hidden_states=True),
                    theirs(dtype), dtype, theirs("float64") if dtype == "float32" else None)


def test_forecast_channel_mixing_needs_the_exogenous_future(tmp_path):
    kwargs = dict(context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1, decoder_d_model=8,
                  decoder_num_layers=1, prediction_length=6, prediction_filter_length=4, num_input_channels=3,
                  enable_forecast_channel_mixing=True, exogenous_channel_indices=[2], fcm_context_length=1)
    model = rustml_nb.from_pretrained(save(build_reference(**kwargs), tmp_path))
    values = np.ones((2, 32, 3), np.float32)
    with pytest.raises(InputError, match=r"known future of its exogenous channels \[2\]: pass future_values \[batch, 4"):
        model(values)
    with pytest.raises(InputError, match=r"future_values: expected \[batch, at least 4, 3\]"):
        model(values, future_values=np.ones((2, 3, 3)))
    with pytest.raises(InputError, match="must be known"):
        model(values, future_values=np.full((2, 4, 3), np.nan))
    assert model(values, future_values=np.ones((2, 6, 3))).prediction_outputs.shape == (2, 4, 2)
    with pytest.raises(InputError, match=r"expected \[batch, 32, 3\]"):  # its channels mix: exactly three
        model(np.ones((2, 32, 4), np.float32), future_values=np.ones((2, 4, 4)))
    with pytest.raises(ConfigError, match="fcm_use_mixer with fcm_context_length 0"):
        TinyTimeMixerConfig(**{**kwargs, "fcm_use_mixer": True, "fcm_context_length": 0})

    import pandas as pd  # forecast(DataFrame, future=DataFrame): the exogenous column by name

    rng = np.random.default_rng(6)
    history = pd.DataFrame(rng.normal(size=(40, 3)), columns=["load", "price", "temperature"],
                           index=pd.date_range("2024-01-01", periods=40, freq="h"))
    future = pd.DataFrame({"temperature": rng.normal(size=4)}, index=pd.date_range("2024-01-02 16:00", periods=4, freq="h"))
    forecast = model.forecast(history, future=future)
    future_values = np.zeros((4, 3))
    future_values[:, 2] = future["temperature"]
    expected = model(history.to_numpy()[-32:], future_values=future_values).prediction_outputs
    assert list(forecast.columns) == ["load", "price"]
    np.testing.assert_array_equal(forecast.to_numpy(), expected)
    with pytest.raises(InputError, match=r"exogenous column\(s\) \['temperature'\], missing"):
        model.forecast(history, future=future.rename(columns={"temperature": "temp"}))
    with pytest.raises(InputError, match="at least 4 rows"):
        model.forecast(history, future=future.iloc[:2])
    with pytest.raises(InputError, match="known future of its exogenous channels"):
        model.forecast(history)

    from rustml_nb.cli import main  # the same on the command line: --future FILE
    history.to_csv(tmp_path / "history.csv", index_label="time")
    future.to_csv(tmp_path / "future.csv", index_label="time")
    assert main(["forecast", str(tmp_path / "checkpoint"), "--input", str(tmp_path / "history.csv"), "--future",
                 str(tmp_path / "future.csv"), "--output", str(tmp_path / "forecast.csv")]) == 0
    written = pd.read_csv(tmp_path / "forecast.csv", index_col=0)
    np.testing.assert_allclose(written.to_numpy(), expected, rtol=1e-6)


def test_forecast_channel_mixing_without_context_or_gate_runs_its_linear(tmp_path):
    """granite-tsfm 0.3.11 cannot run forecast channel mixing with fcm_context_length 0 and no gate (its forward
    names only the gate's output); rustml_nb runs the evident intent, the Linear over the forecasts, pinned here
    against the same arithmetic in NumPy on the checkpoint's own tensors."""
    kwargs = dict(context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1, decoder_d_model=8,
                  decoder_num_layers=1, prediction_length=5, num_input_channels=3, exogenous_channel_indices=[1],
                  enable_forecast_channel_mixing=True, fcm_context_length=0, fcm_gated_attn=False)
    reference = build_reference(seed=9, **kwargs).double()
    values = np.random.default_rng(3).normal(size=(2, 32, 3))
    future = np.random.default_rng(4).normal(size=(2, 5, 3))
    with torch.no_grad(), pytest.raises(UnboundLocalError):
        reference(torch.from_numpy(values), future_values=torch.from_numpy(future))
    model = rustml_nb.from_pretrained(save(reference, tmp_path), dtype="float64")
    # the forecasts before mixing: the same checkpoint without it (its other weights are the same)
    plain = rustml_nb.from_pretrained(save(reference, tmp_path / "plain"), dtype="float64")
    object.__setattr__(plain, "weights", plain.weights._replace(channel_mixing=None))
    unmixed = plain(values, future_values=future)
    base, loc, scale = unmixed.prediction_outputs, unmixed.loc, unmixed.scale  # channels 0 and 2, in data units
    scaled = (base - loc) / scale
    mixed = np.concatenate([scaled, future[..., [1]]], axis=2)
    head = reference.head.fcm_block.mlp
    expected = (mixed @ head.weight.detach().numpy().T + head.bias.detach().numpy() + scaled) * scale + loc
    np.testing.assert_allclose(model(values, future_values=future).prediction_outputs, expected, rtol=1e-9, atol=1e-9)


def test_forecast_channel_mixing_offset_zero_takes_the_last_steps(tmp_path):
    """fcm_prepend_past_offset=0 (skip no step) makes granite-tsfm 0.3.11 slice past[-1:0], an empty window, and
    fail; rustml_nb takes the last fcm_context_length steps, as with no offset: pinned against that model."""
    kwargs = dict(context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1, decoder_d_model=8,
                  decoder_num_layers=1, prediction_length=5, num_input_channels=2, enable_forecast_channel_mixing=True,
                  fcm_context_length=2, fcm_prepend_past=True)
    values = np.random.default_rng(5).normal(size=(2, 32, 2))
    reference = build_reference(seed=10, fcm_prepend_past_offset=0, **kwargs).double()
    with torch.no_grad(), pytest.raises(ValueError, match="Input sequence length"):
        reference(torch.from_numpy(values))
    without_offset = build_reference(seed=10, **kwargs).double()  # the same draws: the same weights
    with torch.no_grad():
        expected = without_offset(torch.from_numpy(values)).prediction_outputs.numpy()
    model = rustml_nb.from_pretrained(save(reference, tmp_path), dtype="float64")
    np.testing.assert_allclose(model(values).prediction_outputs, expected, rtol=1e-9, atol=1e-9)


@given(ttm_kwargs(), st.lists(st.integers(1, 5), min_size=1, max_size=3), st.sampled_from(["float64", "float32"]),
       st.integers(1, 3), st.integers(0, 2 ** 16))
def test_static_categorical_inputs_match_granite_tsfm(tmp_path_factory, kwargs, vocab, dtype, batch, seed):
    """Static categorical variables: each one's embedding row joins a batch element's channels in the decoder's
    channel mixing (repeated over its tokens), then is dropped."""
    kwargs = {**kwargs, "use_decoder": True, "decoder_mode": "mix_channel", "categorical_vocab_size_list": vocab}
    reference = build_reference(seed=seed, **kwargs)
    folder = save(reference, tmp_path_factory.mktemp("categorical"))
    rng = np.random.default_rng(seed)
    values, tokens = inputs(kwargs, rng, batch)
    categories = np.stack([rng.integers(0, size, batch) for size in vocab], axis=1)
    ours = rustml_nb.from_pretrained(folder, dtype=dtype)
    freq = tokens if ours.config.resolution_prefix_tuning else None

    def theirs(precision):
        with torch.no_grad():
            return reference.to(TORCH_DTYPES[precision])(
                past_values=torch.from_numpy(values.astype(precision)), static_categorical_values=torch.from_numpy(
                    categories.astype(precision)), freq_token=None if freq is None else torch.from_numpy(freq))

    compare_outputs(ours(values.astype(dtype), freq_token=freq, static_categorical_values=categories), theirs(dtype),
                    dtype, theirs("float64") if dtype == "float32" else None)


def test_static_categorical_values_are_required_and_checked(tmp_path, capsys):
    kwargs = dict(context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1, decoder_d_model=8,
                  decoder_num_layers=1, prediction_length=4, num_input_channels=2, decoder_mode="mix_channel",
                  categorical_vocab_size_list=[3, 2])
    model = rustml_nb.from_pretrained(save(build_reference(**kwargs), tmp_path))
    values = np.ones((2, 32, 2), np.float32)
    with pytest.raises(InputError, match=r"its 2 static categorical variable\(s\) \(vocabulary sizes \[3, 2\]\)"):
        model(values)
    with pytest.raises(InputError, match=r"variable 1 takes categories in \[0, 2\), got \[0, 2\]"):
        model(values, static_categorical_values=[[0, 0], [2, 2]])
    with pytest.raises(InputError, match=r"expected \[2, 2\] integers"):
        model(values, static_categorical_values=[[0.5, 0], [1, 1]])
    with pytest.raises(InputError, match="output_hidden_states with static categorical"):
        model(values, static_categorical_values=[[0, 1], [2, 0]], output_hidden_states=True)
    assert model(values[0], static_categorical_values=[2, 1]).prediction_outputs.shape == (4, 2)
    from rustml_nb.cli import main
    assert main(["inspect", str(tmp_path / "checkpoint")]) == 0
    assert "static categorical variables [3, 2]" in capsys.readouterr().out
    plain = save(build_reference(**{**kwargs, "categorical_vocab_size_list": None}), tmp_path / "plain")
    with pytest.raises(InputError, match="no static categorical inputs"):
        rustml_nb.from_pretrained(plain)(values, static_categorical_values=[[0], [1]])


def test_bundled_ttm_demo_matches_granite_tsfm_and_its_reported_metrics():
    """The TinyTimeMixer trained with granite-tsfm on the demo data runs at parity on the demo slice, and its
    metrics were measured on the PatchTST demo's test windows (the same baselines, to the digit)."""
    from rustml_nb import demo
    from rustml_nb.parity import load_reference, reference_outputs

    history, _ = demo.test_slice()
    truth = None
    for dtype in ("float64", "float32"):
        values = history.to_numpy(dtype)[None]
        reference = load_reference(granite(), "TinyTimeMixerForPrediction", demo.TTM_MODEL_PATH, TORCH_DTYPES[dtype])
        theirs = reference_outputs(reference, values, output_hidden_states=True)
        if dtype == "float64":
            truth = theirs
        compare_outputs(rustml_nb.from_pretrained(demo.TTM_MODEL_PATH, dtype=dtype)(values, output_hidden_states=True),
                        theirs, dtype, truth if dtype == "float32" else None)
    ours, patchtst = demo.metrics(demo.TTM_METRICS), demo.metrics()
    assert set(ours["test_metrics"]) == {"TinyTimeMixer (this model)", "last value", "seasonal naive (24 h)"}
    assert ours["split"] == patchtst["split"] and ours["test_windows"] == patchtst["test_windows"]
    for baseline in ("last value", "seasonal naive (24 h)"):
        assert ours["test_metrics"][baseline] == patchtst["test_metrics"][baseline]


def with_categorical(kwargs):
    return {**kwargs, "use_decoder": True, "decoder_mode": "mix_channel", "categorical_vocab_size_list": [3, 2]}


@given(st.one_of(fcm_kwargs(), ttm_kwargs().map(with_categorical)))
def test_mapping_and_detection_cover_channel_mixing_and_categorical_inputs(kwargs):
    """Forecast channel mixing's and the categorical embeddings' tensors map both ways, the weights alone tell
    that a checkpoint has them, and a config.json that denies them is reported."""
    state = {key: value.numpy() for key, value in build_reference(**kwargs).state_dict().items()}
    result = map_tinytimemixer_weights(state)
    assert result.unmapped == [] and all(hf_name(ours) == key for ours, key in result.sources.items())
    config = TinyTimeMixerConfig(**kwargs)
    assert {name: tuple(array.shape) for name, array in result.mapped.items()} == expected_shapes(config, "prediction")
    report = rustml_nb.detect_tinytimemixer(result.mapped)
    fcm = kwargs.get("enable_forecast_channel_mixing", False)
    assert report.enable_forecast_channel_mixing == fcm
    assert report.categorical_variables == len(kwargs.get("categorical_vocab_size_list") or [])
    denied = dict(kwargs, enable_forecast_channel_mixing=False) if fcm else \
        dict(kwargs, categorical_vocab_size_list=None)
    fields = {field for field, _, _ in
              rustml_nb.check_tinytimemixer_compatibility(result.mapped, TinyTimeMixerConfig(**denied)).mismatches}
    assert ("enable_forecast_channel_mixing" if fcm else "categorical_vocab_size_list (variables)") in fields


def test_compile_kernels_of_the_family_serve_its_checkpoints(tmp_path):
    """`rustml-nb compile --family tinytimemixer` compiles what a TinyTimeMixer checkpoint runs: afterwards a
    plain one, one with the frequency token and the base norm, one with forecast channel mixing, an r3 one
    (multi-scale, register and FFT tokens, the multi-quantile head) and a decomposed one forecast without
    compiling. (A gate other than softmax compiles the mixer for its own kind on first use.)"""
    import os
    import subprocess
    import sys

    cache = tmp_path / "cache"
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    command = cli_watching_slice_assignments("compile", "--family", "tinytimemixer")
    result = subprocess.run([sys.executable, "-c", command],
                            capture_output=True, text=True, timeout=600, env=environment)
    assert result.returncode == 0 and "compiled the kernels of tinytimemixer for float32" in result.stdout, result.stderr
    assert "SLICE_ASSIGNMENTS []" in result.stdout, result.stdout  # no kernel compiles a slice's shape-error message
    small = dict(num_input_channels=3, context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1,
                 prediction_length=4, decoder_d_model=8, decoder_num_layers=1)
    folders = []
    for index, extra in enumerate([{}, dict(resolution_prefix_tuning=True, enable_base_norm_always=True,
                                            adaptive_patching_levels=1),
                                   dict(enable_forecast_channel_mixing=True, exogenous_channel_indices=[2],
                                        fcm_context_length=1, prediction_channel_indices=[0, 1]),
                                   dict(multi_scale=True, register_tokens=2, fft_length=2, multi_quantile_head=True),
                                   dict(decompose=True, scaling="mean")]):
        class_name = "TinyTimeMixerForDecomposedPrediction" if extra.get("decompose") else "TinyTimeMixerForPrediction"
        folders.append(str(save(build_reference(class_name, seed=index, **small, **extra), tmp_path / f"model{index}")))
    script = COMPILE_COUNTER + f"""
import numpy as np, rustml_nb
for folder in {folders!r}:
    model = rustml_nb.from_pretrained(folder)
    c = model.config
    extra = {{}}
    if c.resolution_prefix_tuning:
        extra["freq_token"] = [0, 1]
    if c.enable_forecast_channel_mixing:
        extra["future_values"] = np.ones((2, c.prediction_length, c.num_input_channels), np.float32)
    model(np.ones((2, c.context_length, c.num_input_channels), np.float32), **extra)
print("COMPILED", compiled)
"""
    warm = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=environment)
    assert "COMPILED []" in warm.stdout, warm.stdout + warm.stderr[-3000:]
