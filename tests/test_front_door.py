"""The CLI, the bundled demo and the pandas API."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import rustml_nb
from rustml_nb import demo
from rustml_nb.cli import main
from reference import build_reference, realistic_series, run_reference


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "rustml_nb", *args], capture_output=True, text=True, timeout=300)


def test_default_forecast_runs_the_bundled_model_on_its_slice(capsys):
    assert main(["forecast"]) == 0
    out = capsys.readouterr().out
    history, actual = demo.test_slice()
    assert "seattle forecast" in out and "san_francisco actual" in out
    assert str(actual.index[0]) in out and str(actual.index[-1]) in out
    mae = float(out.split("mean absolute error over these 24 steps: ")[1].split()[0])
    model = rustml_nb.from_pretrained(demo.MODEL_PATH)
    expected = np.mean(np.abs(model.forecast(history).to_numpy() - actual.to_numpy()))
    assert mae == pytest.approx(expected, abs=1e-3)


def test_bundled_model_matches_transformers_and_its_reported_metrics():
    """The shipped checkpoint runs at parity, and the metrics shipped beside it are what it scores."""
    import transformers
    reference = transformers.PatchTSTForPrediction.from_pretrained(demo.MODEL_PATH).eval()
    ours = rustml_nb.from_pretrained(demo.MODEL_PATH)
    history, actual = demo.test_slice()
    values = history.to_numpy(np.float32)[None]
    expected = run_reference(reference, values).prediction_outputs.numpy()
    np.testing.assert_allclose(ours(values).prediction_outputs, expected, atol=2e-4 * (1 + np.abs(expected).max()))
    metrics = demo.metrics()["test_metrics"]
    assert set(metrics) == {"PatchTST (this model)", "last value", "seasonal naive (24 h)"}
    assert all(m["mse"] > 0 and m["mae"] > 0 for m in metrics.values())


def test_forecast_from_and_to_files(tmp_path):
    history, _ = demo.test_slice()
    source = tmp_path / "history.parquet"
    history.reset_index().to_parquet(source)
    result = run_cli("forecast", str(demo.MODEL_PATH), "--input", str(source), "--output", str(tmp_path / "f.csv"),
                     "--plot", str(tmp_path / "f.png"))
    assert result.returncode == 0, result.stderr
    written = pd.read_csv(tmp_path / "f.csv", index_col=0, parse_dates=True)
    assert list(written.columns) == ["seattle", "san_francisco"] and len(written) == 24
    assert written.index[0] == history.index[-1] + pd.Timedelta(hours=1)
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["forecast", "/no/such/folder", "--input", str(demo.TEST_SLICE)], "not a checkpoint folder"),
    (["forecast", str(demo.MODEL_PATH)], "give --input FILE"),
    (["forecast", "--input", "missing.csv"], "input file not found: missing.csv"),
    (["inspect", "not a/valid/repo id"], "neither an existing folder nor a valid Hub repo id"),
])
def test_errors_are_one_line_and_a_nonzero_exit(args, message):
    result = run_cli(*args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
    debug = run_cli("--debug", *args)
    assert "Traceback" in debug.stderr


def test_wrong_channel_count_names_both(tmp_path):
    frame = pd.DataFrame({"a": np.zeros(400), "b": np.zeros(400), "c": np.zeros(400)})
    frame.to_csv(tmp_path / "three.csv", index=False)
    result = run_cli("forecast", str(demo.MODEL_PATH), "--input", str(tmp_path / "three.csv"))
    assert result.returncode == 1 and "takes 2 channel(s), the data has 3" in result.stderr


def test_inspect_lists_every_tensor_and_the_parameter_count(capsys):
    assert main(["inspect"]) == 0
    out = capsys.readouterr().out
    tensors = rustml_nb.ModelBundle.from_dir(demo.MODEL_PATH).load_tensors()
    for key in tensors:
        assert key in out
    parameters = sum(v.size for k, v in tensors.items() if not k.endswith(("running_mean", "running_var",
                                                                           "num_batches_tracked")))
    assert f"parameters   {parameters:,}" in out
    assert "ChannelIndependent" in out and "head.projection.weight" in out


def test_parity_command_passes_on_the_bundled_model(capsys):
    for dtype in ("float64", "float32"):
        assert main(["parity", "--dtype", dtype]) == 0
        out = capsys.readouterr().out
        assert "prediction_outputs" in out and "input of encoder layer 1" in out and "all within tolerance" in out


def test_parity_command_exits_nonzero_beyond_tolerance(capsys, monkeypatch):
    """The exit status follows the comparison: a difference beyond tolerance makes it 1."""
    from rustml_nb import parity
    real = parity.field_differences

    def one_field_off(ours, theirs):
        rows = real(ours, theirs)
        rows[0].relative = 1.0
        return rows

    monkeypatch.setattr(parity, "field_differences", one_field_off)
    assert main(["parity"]) == 1
    assert "BEYOND TOLERANCE" in capsys.readouterr().out


def test_parity_without_transformers_says_what_to_install(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    assert main(["parity"]) == 2
    assert "parity needs torch and transformers" in capsys.readouterr().err


def test_help_reads_well():
    result = run_cli("--help")
    assert result.returncode == 0 and "forecast the bundled test slice" in result.stdout
    assert "--plot FILE.png" in run_cli("forecast", "--help").stdout


def test_dataframe_in_dataframe_out():
    model = rustml_nb.from_pretrained(demo.MODEL_PATH)
    history, _ = demo.test_slice()
    forecast = model.forecast(history)
    assert isinstance(forecast, pd.DataFrame) and list(forecast.columns) == list(history.columns)
    assert forecast.index.equals(pd.date_range(history.index[-1] + pd.Timedelta(hours=1), periods=24, freq="h"))
    np.testing.assert_array_equal(forecast.to_numpy(), model(history.to_numpy()).prediction_outputs)
    with_column = history.reset_index()  # a time column instead of an index
    assert model.forecast(with_column).index.equals(forecast.index)
    plain = history.reset_index(drop=True)  # no time at all: integer steps continue
    assert list(model.forecast(plain).index) == list(range(len(plain), len(plain) + 24))
    longer = pd.concat([history.iloc[:50].set_axis(history.index[:50] - pd.Timedelta(hours=50)), history])
    pd.testing.assert_frame_equal(model.forecast(longer), forecast)  # only the last context_length rows count


@pytest.mark.parametrize("distribution", ["student_t", "normal", "negative_binomial"])
def test_point_forecast_of_a_distribution_head_is_transformers_mean(distribution):
    kwargs = dict(num_input_channels=2, context_length=16, patch_length=4, patch_stride=4, d_model=8,
                  num_attention_heads=2, ffn_dim=8, num_hidden_layers=1, prediction_length=3, loss="nll",
                  distribution_output=distribution, scaling="mean")
    reference = build_reference("PatchTSTForPrediction", seed=4, torch_dtype=torch.float64, **kwargs)
    model = rustml_nb.PatchTSTForPrediction.from_hub_weights(
        rustml_nb.PatchTSTConfig(**kwargs), {k: v.numpy() for k, v in reference.state_dict().items()}, "float64")
    values = np.abs(realistic_series(np.random.default_rng(0), 3, 16, 2))
    out = run_reference(reference, values)
    distr = reference.distribution_output.distribution(tuple(p.clone() for p in out.prediction_outputs),
                                                       loc=out.loc, scale=out.scale)
    np.testing.assert_allclose(model.forecast(values), distr.mean.numpy(), rtol=1e-9, atol=1e-9)
