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

import numpy as np
import torch

from rustml_nb.models.tinytimemixer import REFERENCE
from rustml_nb.parity import reference_module
from train_demo_model import CONTEXT, DATA, HORIZON, SEED, fit, load_series, split, test_report

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
    train, val, test, train_end, val_end = split(frame)
    model = granite.TinyTimeMixerForPrediction(granite.TinyTimeMixerConfig(**CONFIG))
    fit(model, train, val)
    report = test_report(model, "TinyTimeMixer (this model)", frame, test, train_end, val_end)
    report["parameters"] = sum(p.numel() for p in model.parameters())
    model.save_pretrained(DATA / "ttm_demo_model")
    (DATA / "ttm_demo_metrics.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
