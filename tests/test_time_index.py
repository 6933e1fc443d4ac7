"""Forecast timestamps: any resolution and time zone, gaps put on the grid, bad time axes refused."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import rustml_nb
from rustml_nb import demo
from rustml_nb.errors import InputError, RustmlWarning


@pytest.fixture(scope="module")
def model():
    return rustml_nb.from_pretrained(demo.MODEL_PATH)


@pytest.fixture(scope="module")
def history():
    return demo.test_slice()[0]


def hours_after(last, count=24):
    return pd.date_range(last + pd.Timedelta(hours=1), periods=count, freq="h")


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_any_resolution_with_a_gap_labels_the_future_hourly(model, history, unit):
    """pandas 3 makes microsecond indexes; with one missing hour the step used to come from asi8 read as
    nanoseconds, labelling the future 3.6 s apart."""
    gapped = history.drop(history.index[100]).set_axis(history.index.drop(history.index[100]).as_unit(unit))
    with pytest.warns(RustmlWarning, match=r"1 missing row\(s\) of its h grid were inserted"):
        forecast = model.forecast(gapped)
    expected = hours_after(history.index[-1])
    assert list(forecast.index) == list(expected) and forecast.index.unit == unit
    assert (np.diff(forecast.index.to_numpy()) == np.timedelta64(1, "h")).all()


def test_a_gap_counts_as_missing_values(model, history):
    gapped = history.drop(history.index[[50, 51, 200]])
    with pytest.warns(RustmlWarning, match=r"3 missing row"):
        forecast = model.forecast(gapped)
    filled = history.copy()
    filled.iloc[[50, 51, 200]] = np.nan
    pd.testing.assert_frame_equal(forecast, model.forecast(filled), check_exact=True)
    # NaN is a missing value: 0 with mask 0 (a masked value that is not NaN still enters the patches, as in
    # transformers)
    masked = model(np.nan_to_num(filled.to_numpy()), past_observed_mask=~filled.isna().to_numpy()).prediction_outputs
    np.testing.assert_array_equal(forecast.to_numpy(), masked)


def test_time_zones_are_kept(model, history):
    local = history.tz_localize("America/Los_Angeles", nonexistent="shift_forward", ambiguous="NaT")
    local = local[local.index.notna()]
    utc = history.tz_localize("UTC")
    forecast = model.forecast(utc)
    assert str(forecast.index.tz) == "UTC" and forecast.index[0] == utc.index[-1] + pd.Timedelta(hours=1)
    assert len(model.forecast(utc.tz_convert("Asia/Kolkata"))) == 24


@pytest.mark.parametrize("change, message", [
    (lambda h: h.iloc[::-1], r"row 1 of the history \(2010-12-30 22:00:00\) comes before row 0"),
    (lambda h: h.set_axis(h.index.where(np.arange(len(h)) != 7, h.index[6])),
     r"row 7 of the history \(2010-12-17 06:00:00\) repeats the timestamp of row 6"),
    (lambda h: h.set_axis(h.index.where(np.arange(len(h)) != 30, pd.NaT)), r"row 30 of the history has no timestamp"),
    (lambda h: h.set_axis(h.index + pd.to_timedelta(np.random.default_rng(0).integers(0, 50, len(h)), unit="min")),
     r"cannot infer the time step .* pass freq="),
])
def test_bad_time_axes_are_refused_with_the_row(model, history, change, message):
    with pytest.raises(InputError, match=message):
        model.forecast(change(history))


def test_freq_overrides_inference(model, history):
    """Every other hour, with a few single hours: the commonest step (2 h) does not divide them all, so only
    the caller can say the grid is hourly."""
    full = pd.concat(demo.test_slice())  # 360 hours
    rows = np.arange(len(full))
    kept = full[(rows % 2 == 0) | (rows % 37 == 1)]
    with pytest.raises(InputError, match="pass freq="):
        model.forecast(kept)
    with pytest.warns(RustmlWarning, match="missing row"):
        forecast = model.forecast(kept, freq="h")
    assert forecast.index[0] == kept.index[-1] + pd.Timedelta(hours=1)
    with pytest.raises(InputError, match=r"is not on the 2h grid"):
        model.forecast(kept, freq="2h")
    with pytest.raises(InputError, match="not a pandas frequency"):
        model.forecast(history, freq="fortnightly-ish")


def test_calendar_steps(model, history):
    monthly = history.set_axis(pd.date_range("1990-01-01", periods=len(history), freq="MS"))
    forecast = model.forecast(monthly)
    assert list(forecast.index) == list(pd.date_range(monthly.index[-1], periods=25, freq="MS")[1:])


def test_short_history_needs_pad(model, history):
    short = history.iloc[-200:]
    with pytest.raises(InputError, match=r"needs 336 rows of history, the data has 200; pass pad=True"):
        model.forecast(short)
    padded = pd.concat([history.iloc[:136] * np.nan, short])
    pd.testing.assert_frame_equal(model.forecast(short, pad=True), model.forecast(padded), check_exact=True)


def test_unusable_columns(model, history):
    text_times = history.reset_index().assign(time=lambda f: f["time"].astype(str).str.replace("2010", "twenty-ten"))
    with pytest.raises(InputError, match=r"column 'time' could not be read as timestamps"):
        model.forecast(text_times)
    complex_values = history.assign(seattle=history["seattle"] + 1j)
    with pytest.raises(InputError, match=r"column 'seattle' holds complex numbers"):
        model.forecast(complex_values)
    with pytest.raises(InputError, match=r"'seattle' is bool"):
        model.forecast(history.assign(seattle=history["seattle"] > 40))


def test_a_regular_history_gives_no_warning(model, history):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.forecast(history)
