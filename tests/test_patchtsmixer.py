"""PatchTSMixer: config, name mapping, detection and parity with transformers over every class and switch."""

from __future__ import annotations

import copy
import dataclasses
import re

import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from hypothesis import given, strategies as st

import rustml_nb
from rustml_nb.cli import main
from rustml_nb.errors import ArchitectureMismatchError, ConfigError
from rustml_nb.models.patchtsmixer.detection import expected_shapes
from rustml_nb.models.patchtsmixer.mapping import hf_name
from reference import (COMPILE_COUNTER, assert_each_series_as_alone, build_reference, cli_watching_slice_assignments,
                       realistic_series, run_reference, state_dict_numpy)
from strategies import patchtsmixer_kwargs
from test_parity import TORCH_DTYPES, compare_outputs, draw_inputs

CLASS_NAMES = ("PatchTSMixerModel", "PatchTSMixerForPrediction", "PatchTSMixerForPretraining",
               "PatchTSMixerForTimeSeriesClassification", "PatchTSMixerForRegression")
HEAD_OF_CLASS = dict(zip(CLASS_NAMES, ("none", "prediction", "pretraining", "classification", "regression")))
# transformers' classification and regression classes take no observed mask
TAKES_OBSERVED_MASK = ("PatchTSMixerModel", "PatchTSMixerForPrediction", "PatchTSMixerForPretraining")


def test_config_has_every_transformers_field_with_its_default():
    theirs = transformers.PatchTSMixerConfig()
    names = [f.name for f in dataclasses.fields(rustml_nb.PatchTSMixerConfig) if f.name != "architectures"]
    declared = [name for name in transformers.PatchTSMixerConfig.__annotations__ if not name.startswith("_")
                and name not in ("model_type", "attribute_map")]
    assert sorted(declared) == sorted(names)
    ours = rustml_nb.PatchTSMixerConfig()
    for name in names:
        expected = getattr(theirs, name)
        assert getattr(ours, name) == (list(expected) if isinstance(expected, tuple) else expected), name
    assert ours.num_patches == theirs.num_patches


@pytest.mark.parametrize("field, value, message", [
    ("mode", "flatten", "mode must be one of"),
    ("head_aggregation", "median", "head_aggregation must be one of"),
    ("prediction_channel_indices", [0, 5], r"prediction_channel_indices must be distinct channel numbers in \[0, 2\)"),
    ("self_attn_heads", 3, r"d_model \(8\) must be divisible by self_attn_heads \(3\)"),
    ("gated_attn", "yes", "gated_attn must be true/false"),
])
def test_invalid_config_values(field, value, message):
    values = {"model_type": "patchtsmixer", "num_input_channels": 2, "self_attn": True, field: value}
    with pytest.raises(ConfigError, match=message):
        rustml_nb.PatchTSMixerConfig.from_dict(values)


@st.composite
def checkpoints(draw):
    class_name = draw(st.sampled_from(CLASS_NAMES))
    kwargs = draw(patchtsmixer_kwargs(class_name, runnable_in_transformers=False))
    model = build_reference(class_name, seed=draw(st.integers(0, 100)), **kwargs)
    return class_name, kwargs, state_dict_numpy(model)


@given(checkpoints())
def test_mapping_is_a_bijection_onto_what_the_config_needs(checkpoint):
    class_name, kwargs, state = checkpoint
    result = rustml_nb.map_patchtsmixer_weights(state)
    assert result.unmapped == [] and len(result.mapped) == len(state)
    for ours, key in result.sources.items():
        assert hf_name(ours, prefixed=class_name != "PatchTSMixerModel") == key
        np.testing.assert_array_equal(result.mapped[ours], state[key])
    shapes = expected_shapes(rustml_nb.PatchTSMixerConfig(**kwargs), HEAD_OF_CLASS[class_name])
    assert {name: tuple(array.shape) for name, array in result.mapped.items()} == shapes


@given(checkpoints())
def test_detection_agrees_with_the_config_that_built_the_weights(checkpoint):
    class_name, kwargs, state = checkpoint
    config = rustml_nb.PatchTSMixerConfig(**kwargs, architectures=[class_name])
    check = rustml_nb.check_patchtsmixer_compatibility(rustml_nb.map_patchtsmixer_weights(state).mapped, config)
    assert check.mismatches == []
    report = check.report
    assert report.head == HEAD_OF_CLASS[class_name] and report.d_model == config.d_model
    assert report.num_layers == config.num_layers and report.patch_length == config.patch_length
    if config.num_layers:
        assert report.mode == config.mode and report.gated_attn == config.gated_attn
        assert report.self_attn == config.self_attn and report.num_patches == config.num_patches
        assert report.norm == ("batchnorm" if config.batch_norm else "layernorm")
    assert (report.positional_encoding is not None) == config.use_positional_encoding
    if config.use_positional_encoding and config.num_patches * config.d_model > 1:
        assert report.positional_encoding == config.positional_encoding_type


def test_disagreements_are_reported(tmp_path):
    kwargs = dict(num_input_channels=2, context_length=16, patch_length=4, patch_stride=4, d_model=8, num_layers=1)
    reference = build_reference("PatchTSMixerForPrediction", seed=0, **kwargs, gated_attn=False)
    config = rustml_nb.PatchTSMixerConfig(**kwargs, gated_attn=True)
    with pytest.raises(ArchitectureMismatchError, match="gated_attn: config says True, weights say False"):
        rustml_nb.PatchTSMixerForPrediction.from_hub_weights(config, state_dict_numpy(reference))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("class_name", CLASS_NAMES)
@given(data=st.data())
def test_parity_with_transformers(class_name, dtype, data, tmp_path_factory):
    kwargs = data.draw(patchtsmixer_kwargs(class_name), label="config")
    reference = build_reference(class_name, seed=data.draw(st.integers(0, 1000), label="seed"),
                                torch_dtype=TORCH_DTYPES[dtype], **kwargs)
    folder = tmp_path_factory.mktemp("checkpoint")
    reference.save_pretrained(folder)
    model = rustml_nb.from_pretrained(folder, dtype=dtype)
    assert type(model).__name__ == class_name
    values, observed = draw_inputs(data, kwargs, dtype, missing_values=class_name in TAKES_OBSERVED_MASK)
    mask = None
    if class_name in ("PatchTSMixerForPretraining", "PatchTSMixerModel") and data.draw(st.booleans(), label="mask"):
        mask = np.random.default_rng(0).random((values.shape[0], kwargs["num_input_channels"],
                                                model.config.num_patches)) < 0.4
    extra = {"mask": mask} if mask is not None else {}
    ours = model(values, observed, output_hidden_states=True, **extra)
    expected = _without_the_log_scale(run_reference(reference, values, observed, mask, output_hidden_states=True),
                                      class_name, kwargs)
    if kwargs["num_layers"] == 0:
        assert ours.hidden_states == () and not expected.hidden_states
        ours.hidden_states = None
    truth = None
    if dtype == "float32":
        as64 = None if observed is None else observed.astype(np.float64)
        truth = _without_the_log_scale(run_reference(copy.deepcopy(reference).double(), values.astype(np.float64),
                                                     as64, mask, output_hidden_states=True), class_name, kwargs)
    compare_outputs(ours, expected, dtype, truth)
    assert_each_series_as_alone(
        lambda i: model(values[i:i + 1], None if observed is None else observed[i:i + 1], output_hidden_states=True,
                        **({"mask": mask[i:i + 1]} if mask is not None else {})),
        ours, len(values), observed, mean_scaled=kwargs["scaling"] == "mean")


def _without_the_log_scale(output, class_name, kwargs):
    """transformers' PatchTSMixerForPrediction builds the predicted distribution even without targets, and
    NegativeBinomialOutput.distribution adds log(scale) to the logits in place: the logits it returns are the
    head's plus log(scale) (see test_negative_binomial_logits_are_the_heads). Undone here, so the comparison
    is with the head's own parameters, which rustml_nb returns."""
    if (class_name == "PatchTSMixerForPrediction" and kwargs["loss"] != "mse"
            and kwargs["distribution_output"] == "negative_binomial"):
        total_count, logits = output.prediction_outputs
        output.prediction_outputs = (total_count, logits - output.scale.log())
    return output


def test_negative_binomial_logits_are_the_heads():
    """transformers' negative binomial forecast returns logits + log(scale) (an in-place side effect of building
    the distribution); ours are the head's logits, as PatchTST's and as documented, so log(scale) is added
    once, by point_forecast or by the distribution built from them."""
    kwargs = dict(SMALL, loss="nll", prediction_length=3, distribution_output="negative_binomial")
    reference = build_reference("PatchTSMixerForPrediction", seed=5, torch_dtype=torch.float64, **kwargs)
    model = rustml_nb.PatchTSMixerForPrediction.from_hub_weights(
        rustml_nb.PatchTSMixerConfig(**kwargs), state_dict_numpy(reference), "float64")
    values = np.abs(realistic_series(np.random.default_rng(4), 2, 16, 2))
    ours, theirs = model(values), run_reference(reference, values)
    np.testing.assert_allclose(theirs.prediction_outputs[1].numpy(), ours.prediction_outputs[1] + np.log(ours.scale),
                               rtol=1e-12, atol=1e-12)
    hidden = reference.model(past_values=torch.from_numpy(values)).last_hidden_state.detach()
    raw_logits = reference.head.base_forecast_block.proj[1](hidden.flatten(-2)).transpose(-1, -2).detach().numpy()
    np.testing.assert_allclose(ours.prediction_outputs[1], raw_logits, rtol=1e-12, atol=1e-12)
    distribution = reference.distribution_output.distribution(
        tuple(torch.from_numpy(p.copy()) for p in ours.prediction_outputs), loc=theirs.loc, scale=theirs.scale)
    np.testing.assert_allclose(model.point_forecast(ours), distribution.mean.numpy(), rtol=1e-9)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("mode", ["common_channel", "mix_channel"])
def test_parity_when_threads_split_the_batch_into_blocks(mode, dtype):
    """Drawn configs fit in one block; this batch gives every thread several blocks and an uneven split,
    with all threads and with one, self-attention and BatchNorm included."""
    from rustml_nb.models.patchtsmixer.forward import BLOCK_ROWS
    from rustml_nb.threads import get_num_threads, set_num_threads
    kwargs = dict(num_input_channels=3, context_length=96, patch_length=8, patch_stride=8, d_model=16, num_layers=2,
                  prediction_length=12, mode=mode, self_attn=True, self_attn_heads=2, norm_mlp="BatchNorm",
                  use_positional_encoding=True)
    threads = get_num_threads()
    batch = 2 * threads * BLOCK_ROWS // (3 * 12) + 5
    reference = build_reference("PatchTSMixerForPrediction", seed=9, torch_dtype=TORCH_DTYPES[dtype], **kwargs)
    model = rustml_nb.PatchTSMixerForPrediction.from_hub_weights(
        rustml_nb.PatchTSMixerConfig(**kwargs), state_dict_numpy(reference), dtype)
    values = realistic_series(np.random.default_rng(5), batch, 96, 3).astype(dtype)
    expected = run_reference(reference, values, output_hidden_states=True)
    compare_outputs(model(values, output_hidden_states=True), expected, dtype)
    try:
        set_num_threads(1)
        compare_outputs(model(values, output_hidden_states=True), expected, dtype)
    finally:
        set_num_threads(threads)


# --------------------------------------------------------------------------------------------------
# Where transformers is broken: its behaviour pinned, the evident intent implemented and checked
# --------------------------------------------------------------------------------------------------
SMALL = dict(num_input_channels=2, context_length=16, patch_length=4, patch_stride=4, d_model=8, num_layers=1)


def _distribution_params(reference, raw, distribution):
    """transformers' domain map of raw head outputs (a list, one per parameter), without its squeeze."""
    squareplus = lambda x: (x + torch.sqrt(x * x + 4.0)) / 2.0  # noqa: E731
    eps = torch.finfo(raw[0].dtype).eps
    if distribution == "student_t":
        return [2.0 + squareplus(raw[0]), raw[1], squareplus(raw[2]).clamp_min(eps)]
    if distribution == "normal":
        return [raw[0], squareplus(raw[1]).clamp_min(eps)]
    return [squareplus(raw[0]), raw[1]]


@pytest.mark.parametrize("distribution", ["student_t", "normal", "negative_binomial"])
def test_a_distribution_forecast_of_one_step(distribution):
    """transformers squeezes the horizon of 1 away and then swaps batch and channels: its forward crashes.
    Ours gives every parameter [batch, 1, channels], as for any other horizon."""
    kwargs = dict(SMALL, loss="nll", prediction_length=1, distribution_output=distribution)
    reference = build_reference("PatchTSMixerForPrediction", seed=2, torch_dtype=torch.float64, **kwargs)
    values = realistic_series(np.random.default_rng(0), 3, 16, 2)
    with pytest.raises(RuntimeError):
        run_reference(reference, values)
    model = rustml_nb.PatchTSMixerForPrediction.from_hub_weights(
        rustml_nb.PatchTSMixerConfig(**kwargs), state_dict_numpy(reference), "float64")
    ours = model(values)
    hidden = reference.model(past_values=torch.from_numpy(values)).last_hidden_state.detach()
    flat = hidden.flatten(start_dim=-2)  # [batch, channels, patches * d_model]
    raw = [proj(flat) for proj in reference.head.base_forecast_block.proj]
    expected = [p.transpose(-1, -2).detach().numpy() for p in _distribution_params(reference, raw, distribution)]
    for got, want in zip(ours.prediction_outputs, expected):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_a_loss_other_than_mse_or_nll():
    """transformers builds a distribution head for loss="mae" and its forward then refuses the loss. Ours runs
    the head the checkpoint holds."""
    kwargs = dict(SMALL, loss="mae", prediction_length=3)
    reference = build_reference("PatchTSMixerForPrediction", seed=3, torch_dtype=torch.float64, **kwargs)
    values = realistic_series(np.random.default_rng(1), 2, 16, 2)
    with pytest.raises(ValueError, match="Invalid loss function"):
        run_reference(reference, values)
    model = rustml_nb.PatchTSMixerForPrediction.from_hub_weights(
        rustml_nb.PatchTSMixerConfig(**kwargs), state_dict_numpy(reference), "float64")
    hidden = reference.model(past_values=torch.from_numpy(values)).last_hidden_state.detach()
    expected = [p.detach().transpose(-1, -2).numpy() for p in reference.head.base_forecast_block(hidden.flatten(-2))]
    for got, want in zip(model(values).prediction_outputs, expected):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# The front door
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def forecaster(tmp_path_factory):
    kwargs = dict(num_input_channels=3, context_length=48, patch_length=8, patch_stride=8, d_model=16, num_layers=2,
                  prediction_length=6, prediction_channel_indices=[2, 0])
    folder = tmp_path_factory.mktemp("mixer")
    build_reference("PatchTSMixerForPrediction", seed=7, **kwargs).save_pretrained(folder)
    return folder


def test_forecast_frames_hold_the_channels_forecast(forecaster):
    model = rustml_nb.from_pretrained(forecaster)
    times = pd.date_range("2024-01-01", periods=60, freq="15min")
    history = pd.DataFrame(realistic_series(np.random.default_rng(3), 1, 60, 3)[0], index=times, columns=["a", "b", "c"])
    forecast = model.forecast(history)
    assert list(forecast.columns) == ["a", "c"] and forecast.index[0] == times[-1] + pd.Timedelta(minutes=15)
    np.testing.assert_array_equal(forecast.to_numpy(), model(history.to_numpy()[-48:]).prediction_outputs)


def test_inspect_and_parity_commands(forecaster, capsys):
    assert main(["inspect", str(forecaster)]) == 0
    out = capsys.readouterr().out
    assert "PatchTSMixerForPrediction" in out and "channels [0, 2]" in out and "common_channel" in out
    assert "model.encoder.mlp_mixer_encoder.mixers.1.patch_mixer.mlp.fc1.weight" in out
    assert "layers.1.patch_mixer.fc1.weight" in out
    for dtype in ("float64", "float32"):
        assert main(["parity", str(forecaster), "--dtype", dtype]) == 0
        out = capsys.readouterr().out
        assert "output of mixer layer 1" in out and "all within tolerance" in out
    assert main(["forecast", str(forecaster), "--input", "/no/such.csv"]) == 1


def test_compile_kernels_of_one_family(tmp_path):
    """`rustml-nb compile --family patchtsmixer` compiles that family only, and then any PatchTSMixer
    checkpoint (with or without self-attention, heads of 8 features or not) forecasts without compiling."""
    import os
    import subprocess
    import sys
    cache = tmp_path / "cache"
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    command = cli_watching_slice_assignments("compile", "--family", "patchtsmixer")
    result = subprocess.run([sys.executable, "-c", command],
                            capture_output=True, text=True, timeout=600, env=environment)
    assert result.returncode == 0 and "compiled the kernels of patchtsmixer for float32" in result.stdout, result.stderr
    assert "SLICE_ASSIGNMENTS []" in result.stdout, result.stdout  # no kernel compiles a slice's shape-error message
    compiled = {re.sub(r"-\d+\.py.*", "", path.name) for path in cache.rglob("*.nbi")}
    assert "forward.encode_units" in compiled and not any(name.startswith("forward.embed_series") for name in compiled)
    folders = []
    for index, extra in enumerate([{}, dict(self_attn=True, self_attn_heads=2, d_model=16),
                                   dict(self_attn=True, self_attn_heads=2, d_model=6)]):
        folder = tmp_path / f"model{index}"
        small = dict(num_input_channels=2, context_length=32, patch_length=8, patch_stride=8, d_model=8, num_layers=1,
                     prediction_length=4)
        build_reference("PatchTSMixerForPrediction", seed=index, **{**small, **extra}).save_pretrained(folder)
        folders.append(str(folder))
    script = COMPILE_COUNTER + f"""
import numpy as np, rustml_nb
for folder in {folders!r}:
    model = rustml_nb.from_pretrained(folder)
    model(np.ones((2, model.config.context_length, model.config.num_input_channels), np.float32))
print("COMPILED", compiled)
"""
    warm = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=environment)
    assert "COMPILED []" in warm.stdout, warm.stdout + warm.stderr[-3000:]
