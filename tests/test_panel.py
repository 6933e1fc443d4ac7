"""Many series in one long table: forecast(df, id_columns=..., timestamp_column=..., target_columns=...),
each series treated as forecast() treats one wide history, results long, ids in input order."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import rustml_nb
from rustml_nb import demo
from rustml_nb.errors import InputError, RustmlWarning
from rustml_nb.models import base
from reference import build_reference, realistic_series

CONFIG = dict(num_input_channels=2, context_length=24, patch_length=6, patch_stride=6, d_model=16,
              num_attention_heads=2, ffn_dim=16, num_hidden_layers=1, prediction_length=3)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("panel")
    build_reference("PatchTSTForPrediction", seed=2, torch_dtype=torch.float64, **CONFIG).save_pretrained(folder)
    return rustml_nb.from_pretrained(folder, dtype="float64")


def long_table():
    """Three series (store x item) of different lengths, starts and ends; one with a gap, one with NaN."""
    rng = np.random.default_rng(0)
    parts = []
    for (store, item), start, rows in ((("north", 7), "2024-01-03", 30), (("south", 1), "2024-01-01", 26),
                                       (("north", 2), "2024-01-05", 40)):
        times = pd.date_range(start, periods=rows, freq="D")
        values = realistic_series(rng, 1, rows, 2)[0]
        parts.append(pd.DataFrame({"store": store, "item": item, "date": times, "sales": values[:, 0],
                                   "returns": values[:, 1]}))
    table = pd.concat(parts, ignore_index=True)
    table = table.drop(index=[60 + 5])  # a gap in the third series
    table.loc[3, "sales"] = np.nan  # a missing value in the first
    return table.sample(frac=1, random_state=0).sort_values("date", kind="stable")  # ids interleaved in time


def test_each_series_is_forecast_as_its_own_history(model):
    table = long_table()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        forecast = model.forecast(table, id_columns=["store", "item"], timestamp_column="date",
                                  target_columns=["sales", "returns"])
    gaps = [w for w in caught if issubclass(w.category, RustmlWarning)]
    assert len(gaps) == 1 and "1 of 3 series have gaps" in str(gaps[0].message)
    assert list(forecast.columns) == ["store", "item", "date", "sales", "returns"]
    order = list(dict.fromkeys(zip(table["store"], table["item"])))  # first appearance
    assert list(dict.fromkeys(zip(forecast["store"], forecast["item"]))) == order
    assert forecast["item"].dtype == table["item"].dtype and len(forecast) == 3 * 3
    for (store, item), rows in forecast.groupby(["store", "item"], sort=False):
        alone = table[(table["store"] == store) & (table["item"] == item)].set_index("date")[["sales", "returns"]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RustmlWarning)
            expected = model.forecast(alone)
        assert list(rows["date"]) == list(expected.index)
        np.testing.assert_array_equal(rows[["sales", "returns"]].to_numpy(), expected.to_numpy())


def test_batches_of_series_give_the_same_forecasts(model, monkeypatch):
    table = long_table()
    arguments = dict(id_columns=["store", "item"], timestamp_column="date")  # targets: the numeric columns
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RustmlWarning)
        whole = model.forecast(table, **arguments)
        monkeypatch.setattr(base, "PANEL_BATCH", 2)
        pieces = model.forecast(table, **arguments)
    pd.testing.assert_frame_equal(whole, pieces, check_exact=True)


def test_long_tables_are_checked_by_name(model):
    table = long_table()
    with pytest.raises(InputError, match=r"column\(s\) \['price'\] not in the data"):
        model.forecast(table, id_columns="store", timestamp_column="date", target_columns=["sales", "price"])
    short = table[~((table["store"] == "south") & (table["date"] > "2024-01-20"))]  # south: 20 days
    with pytest.raises(InputError, match=r"series \{'store': 'south', 'item': 1\}: .*has 20; pass pad=True"):
        model.forecast(short, id_columns=["store", "item"], timestamp_column="date", target_columns=["sales", "returns"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RustmlWarning)
        padded = model.forecast(short, id_columns=["store", "item"], timestamp_column="date", pad=True)
    assert padded.loc[padded["store"] == "south", "date"].iloc[0] == pd.Timestamp("2024-01-21")
    with pytest.raises(InputError, match="give id_columns too"):
        model.forecast(table, timestamp_column="date")
    with pytest.raises(InputError, match="the model takes 2 channel"):
        model.forecast(table, id_columns=["store", "item"], timestamp_column="date", target_columns=["sales"])


def test_quantile_columns_in_long_tables(tmp_path):
    build_reference("PatchTSTForPrediction", seed=4, torch_dtype=torch.float64, loss="nll",
                    distribution_output="normal", **CONFIG).save_pretrained(tmp_path)
    model = rustml_nb.from_pretrained(tmp_path, dtype="float64")
    table = long_table()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RustmlWarning)
        forecast = model.forecast(table, id_columns=["store", "item"], timestamp_column="date",
                                  target_columns=["sales", "returns"], quantiles=[0.1, 0.9])
        first = table[(table["store"] == "north") & (table["item"] == 7)].set_index("date")[["sales", "returns"]]
        alone = model.forecast(first, quantiles=[0.1, 0.9])
    assert list(forecast.columns[3:]) == ["sales", "returns", "sales_q0.1", "sales_q0.9", "returns_q0.1",
                                          "returns_q0.9"]
    rows = forecast[(forecast["store"] == "north") & (forecast["item"] == 7)]
    np.testing.assert_array_equal(rows.iloc[:, 3:].to_numpy(), alone.to_numpy())


def test_a_tinytimemixer_forecasts_each_city_on_its_own():
    """The bundled TinyTimeMixer's channels never mix: each city as a series of its own, one target, gives
    that city's channel of the two-channel forecast."""
    model = rustml_nb.from_pretrained(demo.TTM_MODEL_PATH, dtype="float64")
    history, _ = demo.test_slice()
    table = history.reset_index().melt(id_vars="time", var_name="city", value_name="temperature")
    forecast = model.forecast(table, id_columns="city", timestamp_column="time", target_columns="temperature")
    joint = model.forecast(history)
    for city in history.columns:
        np.testing.assert_array_equal(forecast.loc[forecast["city"] == city, "temperature"].to_numpy(),
                                      joint[city].to_numpy())


def test_command_line_forecasts_a_long_table(model, tmp_path, capsys):
    from rustml_nb.cli import main

    table = long_table()
    table.to_csv(tmp_path / "sales.csv", index=False)
    model_folder = tmp_path / "model"
    build_reference("PatchTSTForPrediction", seed=2, **CONFIG).save_pretrained(model_folder)
    with pytest.warns(RustmlWarning, match="1 of 3 series have gaps"):
        assert main(["forecast", str(model_folder), "--input", str(tmp_path / "sales.csv"), "--id-column", "store",
                     "--id-column", "item", "--timestamp-column", "date", "--target", "sales", "--target", "returns",
                     "--output", str(tmp_path / "forecast.parquet")]) == 0
    written = pd.read_parquet(tmp_path / "forecast.parquet").reset_index()
    assert list(written.columns) == ["store", "item", "date", "sales", "returns"] and len(written) == 9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RustmlWarning)
        expected = rustml_nb.from_pretrained(model_folder).forecast(
            pd.read_csv(tmp_path / "sales.csv", parse_dates=["date"]), id_columns=["store", "item"],
            timestamp_column="date")
    np.testing.assert_array_equal(written[["sales", "returns"]].to_numpy(), expected[["sales", "returns"]].to_numpy())
    assert "north" in capsys.readouterr().out
    assert main(["forecast", str(model_folder), "--input", str(tmp_path / "sales.csv"), "--target", "sales"]) == 1
    assert "give --id-column too" in capsys.readouterr().err
    assert main(["forecast", str(model_folder), "--input", str(tmp_path / "sales.csv"), "--id-column", "store",
                 "--id-column", "item", "--quantile", "0.1"]) == 1
    assert "point head" in capsys.readouterr().err


@pytest.mark.parametrize("freq", ["h", "15min", "D"])
def test_regular_tables_take_the_fast_path_and_agree_with_each_series_alone(model, monkeypatch, freq):
    """Every series on one step with no gap (the common case) is converted without a loop over series; the
    forecasts, ids, timestamps and their dtype are those of each series forecast alone."""
    from rustml_nb import frames

    rng = np.random.default_rng(1)
    parts = []
    for index, (start, rows) in enumerate((("2024-03-01", 30), ("2024-02-27 06:00", 24), ("2024-03-02", 41))):
        values = realistic_series(rng, 1, rows, 2)[0]
        parts.append(pd.DataFrame({"id": f"series {index}", "when": pd.date_range(start, periods=rows, freq=freq),
                                   "a": values[:, 0], "b": values[:, 1]}))
    table = pd.concat(parts, ignore_index=True).sample(frac=1, random_state=2)
    table.loc[table.index[5], "a"] = np.nan
    calls = []
    fast = frames._regular_panel
    monkeypatch.setattr(frames, "_regular_panel", lambda *args: calls.append(fast(*args)) or calls[-1])
    forecast = model.forecast(table, id_columns="id", timestamp_column="when")
    assert calls and calls[0] is not None  # the fast path answered
    assert forecast["when"].dtype == table["when"].dtype
    assert list(forecast["id"].unique()) == list(table["id"].unique())
    for name, rows in forecast.groupby("id", sort=False):
        alone = table[table["id"] == name].sort_values("when").set_index("when")[["a", "b"]]
        expected = model.forecast(alone)
        assert list(rows["when"]) == list(expected.index)
        np.testing.assert_array_equal(rows[["a", "b"]].to_numpy(), expected.to_numpy())


def test_progress_bars_when_asked(model, capsys):
    """progress=True: tqdm bars on stderr while reading irregular series and forecasting; none by default."""
    table = long_table()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RustmlWarning)
        quiet = model.forecast(table, id_columns=["store", "item"], timestamp_column="date")
        assert capsys.readouterr().err == ""
        loud = model.forecast(table, id_columns=["store", "item"], timestamp_column="date", progress=True)
    err = capsys.readouterr().err
    assert "reading series" in err and "forecasting 3 series" in err
    pd.testing.assert_frame_equal(quiet, loud)
