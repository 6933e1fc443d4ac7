"""Intervals from distribution heads (PatchTST, PatchTSMixer): exact quantiles of the predicted distribution,
samples from it (``generate``), and quantile columns in DataFrame forecasts. Checked against transformers'
own distribution objects and its ``generate``, in distribution (the draws are NumPy's, not torch's)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import rustml_nb
from rustml_nb.errors import ConfigError, InputError
from reference import build_reference, realistic_series, run_reference

LEVELS = np.array([0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95])
PATCHTST = dict(num_input_channels=2, context_length=24, patch_length=6, patch_stride=6, d_model=16,
                num_attention_heads=2, ffn_dim=16, num_hidden_layers=1, prediction_length=3)
MIXER = dict(num_input_channels=2, context_length=24, patch_length=6, patch_stride=6, d_model=8, num_layers=1,
             prediction_length=3)
CASES = [("PatchTSTForPrediction", PATCHTST, distribution)
         for distribution in ("student_t", "normal", "negative_binomial")] + \
        [("PatchTSMixerForPrediction", MIXER, distribution) for distribution in ("student_t", "normal")]


def checkpoint(tmp_path, class_name, kwargs, distribution, samples=20000):
    reference = build_reference(class_name, seed=3, torch_dtype=torch.float64, loss="nll",
                                distribution_output=distribution, num_parallel_samples=samples, **kwargs)
    reference.save_pretrained(tmp_path / "model")
    return reference, rustml_nb.from_pretrained(tmp_path / "model", dtype="float64")


def history(kwargs, batch=2, seed=0, counts=False):
    values = realistic_series(np.random.default_rng(seed), batch, kwargs["context_length"], kwargs["num_input_channels"])
    return np.abs(values) if counts else values  # a negative binomial models counts


def empirical(samples, levels):
    """[levels, ...] quantiles of samples [batch, samples, horizon, channels] along the samples."""
    return np.quantile(samples, levels, axis=1)


@pytest.mark.parametrize("class_name, kwargs, distribution", CASES)
def test_quantiles_are_the_predicted_distribution_s_own(tmp_path, class_name, kwargs, distribution):
    """Monotone in the level; what transformers' distribution object gives (its CDF where torch has one,
    else its samples); and our samples' quantiles and mean converge to them."""
    reference, model = checkpoint(tmp_path, class_name, kwargs, distribution)
    values = history(kwargs, counts=distribution == "negative_binomial")
    output = model(values)
    quantiles = model.quantiles(output, LEVELS)  # [levels, batch, horizon, channels]
    assert quantiles.shape == (len(LEVELS), 2, 3, 2) and quantiles.dtype == np.float64
    assert np.all(np.diff(quantiles, axis=0) >= 0)

    theirs = run_reference(reference, values)
    torch.manual_seed(0)
    their_samples = reference.generate(torch.from_numpy(values)).sequences.numpy()  # [batch, 20000, horizon, ch]
    spread = quantiles[-1] - quantiles[0] + 1e-9
    if distribution == "normal":
        mean, deviation = theirs.prediction_outputs  # transformers' Normal, shifted and scaled by loc and scale
        standard = (torch.from_numpy(quantiles) - theirs.loc) / theirs.scale
        cdf = torch.distributions.Normal(mean, deviation).cdf(standard).numpy()
        np.testing.assert_allclose(cdf, np.broadcast_to(LEVELS[:, None, None, None], cdf.shape), atol=1e-9)
    elif distribution == "negative_binomial":  # discrete: the empirical quantile is ours, give or take one count
        assert np.all(np.abs(empirical(their_samples, LEVELS) - quantiles) <= 1 + 0.05 * spread)
    else:
        assert np.all(np.abs(empirical(their_samples, LEVELS) - quantiles) <= 0.05 * spread)

    ours = model.generate(values, seed=1).sequences
    assert ours.shape == their_samples.shape
    assert np.all(np.abs(empirical(ours, LEVELS) - quantiles) <= 0.05 * spread + (distribution == "negative_binomial"))
    if distribution != "student_t":  # a Student t's mean is unstable in samples with few degrees of freedom
        np.testing.assert_allclose(ours.mean(axis=1), model.point_forecast(output), atol=0.03 * spread.max())


def test_generate_is_reproducible_and_checked(tmp_path):
    reference, model = checkpoint(tmp_path, "PatchTSTForPrediction", PATCHTST, "normal", samples=7)
    values = history(PATCHTST)
    first = model.generate(values, seed=5).sequences
    assert first.shape == (2, 7, 3, 2)  # num_parallel_samples by default
    np.testing.assert_array_equal(first, model.generate(values, seed=5).sequences)
    assert not np.array_equal(first, model.generate(values, seed=6).sequences)
    assert model.generate(values[0], num_samples=4, seed=5).sequences.shape == (4, 3, 2)
    for wrong in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="num_samples must be a positive integer"):
            model.generate(values, num_samples=wrong)
    with pytest.raises(InputError, match=r"quantiles must be numbers in \(0, 1\)"):
        model.quantiles(model(values), [0.5, 1.0])
    with pytest.raises(InputError, match=r"quantiles must be numbers in \(0, 1\)"):
        model.quantiles(model(values), [])


def test_dataframe_forecasts_gain_quantile_columns(tmp_path):
    _, model = checkpoint(tmp_path, "PatchTSTForPrediction", PATCHTST, "student_t")
    frame = pd.DataFrame(history(PATCHTST, batch=1)[0], columns=["sales", "returns"],
                         index=pd.date_range("2024-01-01", periods=24, freq="D"))
    forecast = model.forecast(frame, quantiles=[0.1, 0.5, 0.9])
    assert list(forecast.columns) == ["sales", "returns", "sales_q0.1", "sales_q0.5", "sales_q0.9",
                                      "returns_q0.1", "returns_q0.5", "returns_q0.9"]
    output = model(frame.to_numpy())
    expected = model.quantiles(output, [0.1, 0.5, 0.9])
    np.testing.assert_array_equal(forecast[["sales_q0.1", "sales_q0.5", "sales_q0.9"]].to_numpy(), expected[..., 0].T)
    np.testing.assert_array_equal(forecast[["sales", "returns"]].to_numpy(), model.point_forecast(output))
    with pytest.raises(InputError, match="quantiles= needs a DataFrame"):
        model.forecast(frame.to_numpy(), quantiles=[0.5])


def test_point_heads_have_no_quantiles_and_one_sample(tmp_path):
    reference = build_reference("PatchTSTForPrediction", seed=1, **PATCHTST)
    reference.save_pretrained(tmp_path / "point")
    model = rustml_nb.from_pretrained(tmp_path / "point")
    values = history(PATCHTST).astype(np.float32)
    frame = pd.DataFrame(values[0], columns=["a", "b"])
    with pytest.raises(ConfigError, match=r"point head \(loss 'mse'\)"):
        model.forecast(frame, quantiles=[0.1, 0.9])
    with pytest.raises(ConfigError, match="point head"):
        model.quantiles(model(values), [0.5])
    sequences = model.generate(values).sequences
    assert sequences.shape == (2, 1, 3, 2)
    np.testing.assert_array_equal(sequences[:, 0], model(values).prediction_outputs)


def test_bundled_distribution_head_demo_matches_transformers_and_its_metrics():
    """The demo PatchTST with a normal head runs at parity on the demo slice (its parameters, loc and scale),
    its quantiles bracket its mean, and its metrics were measured on the PatchTST demo's test windows."""
    import transformers
    from rustml_nb import demo
    from test_parity import compare_outputs

    history, _ = demo.test_slice()
    values = history.to_numpy(np.float64)[None]
    reference = transformers.PatchTSTForPrediction.from_pretrained(demo.NORMAL_MODEL_PATH, dtype=torch.float64).eval()
    model = rustml_nb.from_pretrained(demo.NORMAL_MODEL_PATH, dtype="float64")
    output = model(values)
    compare_outputs(output, run_reference(reference, values), "float64")
    bands = model.quantiles(output, [0.1, 0.9])
    assert np.all(bands[0] < model.point_forecast(output)) and np.all(model.point_forecast(output) < bands[1])
    ours, patchtst = demo.metrics(demo.NORMAL_METRICS), demo.metrics()
    assert ours["split"] == patchtst["split"] and ours["test_windows"] == patchtst["test_windows"]
    for baseline in ("last value", "seasonal naive (24 h)"):
        assert ours["test_metrics"][baseline] == patchtst["test_metrics"][baseline]
