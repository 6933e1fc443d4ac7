"""Writes tests/fixtures/optimum/: PatchTST models exported by Hugging Face optimum, which cannot share the
test environment (optimum-onnx pins transformers<4.58). Run once, in an environment of its own:

    python -m venv /tmp/optimum && /tmp/optimum/bin/pip install torch==2.13.0 \
        && /tmp/optimum/bin/pip install optimum-onnx onnxruntime "transformers<4.58"
    /tmp/optimum/bin/python scripts/make_optimum_fixtures.py

Each fixture folder holds what optimum writes (config.json, model.onnx), the model's own safetensors
checkpoint (model.safetensors, for the bit-exact comparison of the weights) and reference.npz: an input and
transformers' float64 outputs for it (the parity reference).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "optimum"
COMMON = dict(num_input_channels=3, context_length=32, patch_length=8, patch_stride=8, d_model=16,
              num_attention_heads=2, ffn_dim=24, num_hidden_layers=2, prediction_length=4)
FIXTURES = {
    # name: (task, class, config)
    "prediction_batchnorm": ("time-series-forecasting", "PatchTSTForPrediction", dict(COMMON)),
    "prediction_layernorm_cls": ("time-series-forecasting", "PatchTSTForPrediction",
                                 dict(COMMON, norm_type="layernorm", pre_norm=True, use_cls_token=True,
                                      channel_attention=True, scaling="mean", share_embedding=False,
                                      patch_stride=6, activation_function="relu")),
    "prediction_student_t": ("time-series-forecasting", "PatchTSTForPrediction",
                             dict(COMMON, loss="nll", distribution_output="student_t", pooling_type="max")),
    "model_no_scaling": ("feature-extraction", "PatchTSTModel", dict(COMMON, scaling=None, bias=False)),
}


def randomize(model, seed: int) -> None:
    """Every weight and BatchNorm statistic random (transformers' init leaves biases and statistics at 0/1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.dtype.is_floating_point:
                values = torch.randn(tensor.shape, generator=generator) * 0.3
                if name.endswith("running_var"):
                    values = values.abs() + 0.5
                tensor.copy_(values)


def main() -> int:
    if OUT.exists():
        shutil.rmtree(OUT)
    for seed, (name, (task, class_name, kwargs)) in enumerate(FIXTURES.items()):
        folder = OUT / name
        with tempfile.TemporaryDirectory() as scratch:
            model = getattr(transformers, class_name)(transformers.PatchTSTConfig(**kwargs)).eval()
            randomize(model, seed)
            model.save_pretrained(scratch)
            subprocess.run([sys.executable, "-m", "optimum.commands.optimum_cli", "export", "onnx", "-m", scratch,
                            "--task", task, str(folder)], check=True)
            shutil.copy(Path(scratch) / "model.safetensors", folder / "model.safetensors")
        values = np.random.default_rng(seed).normal(size=(2, kwargs["context_length"], kwargs["num_input_channels"]))
        with torch.no_grad():
            output = model.double()(past_values=torch.from_numpy(values))
        main_output = output.last_hidden_state if class_name == "PatchTSTModel" else output.prediction_outputs
        arrays = ([main_output] if isinstance(main_output, torch.Tensor) else list(main_output))
        np.savez(folder / "reference.npz", past_values=values, **{f"output_{i}": a.numpy() for i, a in enumerate(arrays)})
        for extra in folder.iterdir():  # what optimum writes besides the graph and config (none expected)
            if extra.name not in ("config.json", "model.onnx", "model.safetensors", "reference.npz"):
                extra.unlink()
        print(name, sorted(p.name for p in folder.iterdir()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
