"""Train the bundled demo model: a small PatchTSTForPrediction on real hourly temperatures.

Data: ``vega_datasets`` ships hourly 2010 temperatures (°F) for Seattle and San Francisco. Two channels,
a chronological 70/10/20 train/validation/test split, 336 hours of context (two weeks) to forecast 24.
Trained with transformers (PyTorch), saved with ``save_pretrained`` into ``rustml_nb/data/demo_model``;
a slice of the test period goes to ``rustml_nb/data/demo_test_slice.csv``, and the test metrics against
naive baselines to ``rustml_nb/data/demo_metrics.json``, whatever they turn out to be. ``--distribution
normal`` trains the same model with a normal distribution head instead (``demo_normal_model``, for intervals).

    pip install torch==2.13.0 transformers vega_datasets pandas && python scripts/train_demo_model.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import transformers
from vega_datasets import local_data

CONTEXT, HORIZON = 336, 24
DATA = Path(__file__).resolve().parents[1] / "rustml_nb" / "data"
SEED = 0


def load_series() -> pd.DataFrame:
    seattle = local_data.seattle_temps().set_index("date")["temp"].rename("seattle")
    sf = local_data.sf_temps().set_index("date")["temp"].rename("san_francisco")
    frame = pd.concat([seattle, sf], axis=1)
    hourly = pd.date_range(frame.index.min(), frame.index.max(), freq="h")
    gaps = len(hourly) - len(frame)
    frame = frame.reindex(hourly).interpolate(limit=3)  # one missing hour (the DST change)
    frame.index.name = "time"
    print(f"{len(frame)} hourly rows, {gaps} gap hour(s) interpolated")
    return frame.astype(np.float32)


def windows(values: np.ndarray, first_target: int, last_target: int, step: int):
    """(context, future) pairs whose 24 future steps all lie in [first_target, last_target)."""
    origins = range(max(first_target, CONTEXT), last_target - HORIZON + 1, step)
    past = np.stack([values[o - CONTEXT:o] for o in origins])
    future = np.stack([values[o:o + HORIZON] for o in origins])
    return past, future


def baselines(past: np.ndarray, future: np.ndarray) -> dict:
    last_value = np.repeat(past[:, -1:, :], HORIZON, axis=1)
    seasonal = past[:, -24:, :]  # the last day, repeated for the next
    return {"last value": last_value, "seasonal naive (24 h)": seasonal}


def scores(prediction: np.ndarray, future: np.ndarray) -> dict:
    error = prediction - future
    return {"mse": float(np.mean(error**2)), "mae": float(np.mean(np.abs(error)))}


def split(frame: pd.DataFrame):
    """Chronological 70/10/20 windows: (train, validation, test) (past, future) pairs and the split rows."""
    values = frame.to_numpy()
    n = len(values)
    train_end, val_end = int(n * 0.7), int(n * 0.8)
    train = windows(values, 0, train_end, step=1)
    val = windows(values, train_end, val_end, step=1)
    test = windows(values, val_end, n, step=HORIZON)
    print(f"windows: train {len(train[0])}, validation {len(val[0])}, test {len(test[0])}")
    return train, val, test, train_end, val_end


def point_forecast(model, past: np.ndarray) -> np.ndarray:
    """The model's point forecast: its output, or for a distribution head the predicted distribution's mean."""
    output = model(past_values=torch.from_numpy(past))
    if getattr(model.config, "loss", None) == "nll":
        made = model.distribution_output.distribution(output.prediction_outputs, loc=output.loc, scale=output.scale)
        return made.mean.numpy()
    return output.prediction_outputs.numpy()


def fit(model, train, val, learning_rate: float = 1e-3):
    """AdamW on the training windows (the model's own loss), the learning rate cut on validation plateaus,
    early stopping after 8 epochs without gain; the model left at its best validation MSE, in eval mode."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.3, patience=2)
    past, future = map(torch.from_numpy, train)
    best, best_state, patience = float("inf"), None, 0
    started = time.time()
    for epoch in range(60):
        model.train()
        order = torch.randperm(len(past))
        for start in range(0, len(past), 64):
            batch = order[start:start + 64]
            loss = model(past_values=past[batch], future_values=future[batch]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            prediction = point_forecast(model, val[0])
        val_mse = scores(prediction, val[1])["mse"]
        schedule.step(val_mse)
        print(f"epoch {epoch}: validation MSE {val_mse:.4f} ({time.time() - started:.0f} s)", flush=True)
        if val_mse < best - 1e-4:
            best, best_state, patience = val_mse, {k: v.clone() for k, v in model.state_dict().items()}, 0
        else:
            patience += 1
            if patience == 8:
                break
    model.load_state_dict(best_state)
    model.eval()


def test_report(model, name: str, frame: pd.DataFrame, test, train_end: int, val_end: int) -> dict:
    """The model's and the naive baselines' test MSE/MAE, with the split, as the metrics file holds them."""
    with torch.no_grad():
        prediction = point_forecast(model, test[0])
    metrics = {name: scores(prediction, test[1])}
    for baseline, guess in baselines(*test).items():
        metrics[baseline] = scores(guess, test[1])
    for label, values_ in metrics.items():
        print(f"test {label}: MSE {values_['mse']:.3f}, MAE {values_['mae']:.3f}")
    return {
        "data": "vega_datasets seattle-temps.csv + sf-temps.csv, hourly 2010, °F",
        "split": {"train": [str(frame.index[0]), str(frame.index[train_end - 1])],
                  "validation": [str(frame.index[train_end]), str(frame.index[val_end - 1])],
                  "test": [str(frame.index[val_end]), str(frame.index[-1])]},
        "context_length": CONTEXT, "prediction_length": HORIZON, "test_windows": int(len(test[0])),
        "test_metrics": metrics,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distribution", choices=["normal", "student_t"], help="train a distribution head "
                        "instead (saved as demo_<distribution>_model, for intervals; the test slice is kept)")
    args = parser.parse_args()
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    frame = load_series()
    train, val, test, train_end, val_end = split(frame)
    head = dict(loss="nll", distribution_output=args.distribution) if args.distribution else {}
    config = transformers.PatchTSTConfig(
        num_input_channels=2, context_length=CONTEXT, prediction_length=HORIZON, patch_length=24, patch_stride=12,
        d_model=32, num_attention_heads=4, num_hidden_layers=2, ffn_dim=64, pooling_type=None, scaling="std", norm_type="batchnorm", share_embedding=True,
        **head,
    )
    model = transformers.PatchTSTForPrediction(config)
    fit(model, train, val)
    name = f"PatchTST, {args.distribution} head (this model)" if args.distribution else "PatchTST (this model)"
    report = test_report(model, name, frame, test, train_end, val_end)
    stem = f"demo_{args.distribution}" if args.distribution else "demo"
    model.save_pretrained(DATA / f"{stem}_model")
    (DATA / f"{stem}_metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    if not args.distribution:
        # The last full test window: its context and the 24 hours that followed, for the CLI's default run.
        frame.iloc[len(frame) - CONTEXT - HORIZON:].to_csv(DATA / "demo_test_slice.csv", float_format="%.1f")


if __name__ == "__main__":
    main()
