"""Train the bundled TinyTimeMixer demo: a small TinyTimeMixerForPrediction (granite-tsfm 0.3.11) on the same
real hourly temperatures, split and windows as the PatchTST demo (``train_demo_model.py``).

Two channels (Seattle, San Francisco), 336 hours of context to forecast 24, a chronological 70/10/20 split.
Trained from random weights with granite-tsfm's own model and loss (PyTorch), saved with ``save_pretrained``
into ``rustml_nb/data/ttm_demo_model``; the test metrics against the naive baselines go to
``rustml_nb/data/ttm_demo_metrics.json``, whatever they turn out to be.

    pip install torch==2.13.0 transformers vega_datasets pandas && pip install --no-deps granite-tsfm==0.3.11
    python scripts/train_ttm_demo_model.py
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from rustml_nb.models.tinytimemixer import REFERENCE
from rustml_nb.parity import reference_module
from train_demo_model import CONTEXT, DATA, HORIZON, SEED, baselines, load_series, scores, windows

# 28 patches of 12 hours; two adaptive levels (patches of 6 and 12 hours); a decoder.
CONFIG = dict(num_input_channels=2, context_length=CONTEXT, prediction_length=HORIZON, patch_length=12,
              patch_stride=12, d_model=48, num_layers=2, adaptive_patching_levels=2, decoder_d_model=32,
              decoder_num_layers=2, expansion_factor=2, gated_attn=True, mode="common_channel",
              decoder_mode="common_channel", scaling="std", dropout=0.1, head_dropout=0.1)


def main() -> None:
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    granite = reference_module(REFERENCE)
    frame = load_series()
    values = frame.to_numpy()
    n = len(values)
    train_end, val_end = int(n * 0.7), int(n * 0.8)
    train = windows(values, 0, train_end, step=1)
    val = windows(values, train_end, val_end, step=1)
    test = windows(values, val_end, n, step=HORIZON)
    print(f"windows: train {len(train[0])}, validation {len(val[0])}, test {len(test[0])}")

    model = granite.TinyTimeMixerForPrediction(granite.TinyTimeMixerConfig(**CONFIG))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
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
            prediction = model(past_values=torch.from_numpy(val[0])).prediction_outputs.numpy()
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

    with torch.no_grad():
        prediction = model(past_values=torch.from_numpy(test[0])).prediction_outputs.numpy()
    metrics = {"TinyTimeMixer (this model)": scores(prediction, test[1])}
    for name, guess in baselines(*test).items():
        metrics[name] = scores(guess, test[1])
    report = {
        "data": "vega_datasets seattle-temps.csv + sf-temps.csv, hourly 2010, °F (as the PatchTST demo)",
        "split": {"train": [str(frame.index[0]), str(frame.index[train_end - 1])],
                  "validation": [str(frame.index[train_end]), str(frame.index[val_end - 1])],
                  "test": [str(frame.index[val_end]), str(frame.index[-1])]},
        "context_length": CONTEXT, "prediction_length": HORIZON, "test_windows": int(len(test[0])),
        "parameters": sum(p.numel() for p in model.parameters()), "test_metrics": metrics,
    }
    for name, values_ in metrics.items():
        print(f"test {name}: MSE {values_['mse']:.3f}, MAE {values_['mae']:.3f}")
    model.save_pretrained(DATA / "ttm_demo_model")
    (DATA / "ttm_demo_metrics.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
