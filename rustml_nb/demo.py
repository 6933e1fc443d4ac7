"""The bundled demo: a small PatchTSTForPrediction trained on real hourly temperatures (Seattle and San
Francisco, 2010; see ``scripts/train_demo_model.py``), a small TinyTimeMixerForPrediction trained with
granite-tsfm on the same data and split (``scripts/train_ttm_demo_model.py``), and a slice of the test
period."""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
MODEL_PATH = DATA / "demo_model"
TEST_SLICE = DATA / "demo_test_slice.csv"
METRICS = DATA / "demo_metrics.json"
TTM_MODEL_PATH = DATA / "ttm_demo_model"
TTM_METRICS = DATA / "ttm_demo_metrics.json"
# The PatchTST demo with a normal distribution head (``train_demo_model.py --distribution normal``): intervals.
NORMAL_MODEL_PATH = DATA / "demo_normal_model"
NORMAL_METRICS = DATA / "demo_normal_metrics.json"


def test_slice():
    """(history, actual): the bundled test window's 336 hours of context and the 24 hours that followed."""
    import pandas as pd

    frame = pd.read_csv(TEST_SLICE, index_col="time", parse_dates=["time"])
    context = json.loads((MODEL_PATH / "config.json").read_text())["context_length"]
    return frame.iloc[:context], frame.iloc[context:]


def metrics(path=METRICS) -> dict:
    """Test-set MSE/MAE of a demo model (``METRICS``: PatchTST's, ``TTM_METRICS``: TinyTimeMixer's,
    ``NORMAL_METRICS``: the distribution head's mean) and of
    naive baselines, as its training script measured them."""
    return json.loads(path.read_text())
