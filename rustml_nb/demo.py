"""The bundled demo: a small PatchTSTForPrediction trained on real hourly temperatures (Seattle and San
Francisco, 2010; see ``scripts/train_demo_model.py``) and a slice of its test period."""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
MODEL_PATH = DATA / "demo_model"
TEST_SLICE = DATA / "demo_test_slice.csv"
METRICS = DATA / "demo_metrics.json"


def test_slice():
    """(history, actual): the bundled test window's 336 hours of context and the 24 hours that followed."""
    import pandas as pd

    frame = pd.read_csv(TEST_SLICE, index_col="time", parse_dates=["time"])
    context = json.loads((MODEL_PATH / "config.json").read_text())["context_length"]
    return frame.iloc[:context], frame.iloc[context:]


def metrics() -> dict:
    """Test-set MSE/MAE of the demo model and of naive baselines, as the training script measured them."""
    return json.loads(METRICS.read_text())
