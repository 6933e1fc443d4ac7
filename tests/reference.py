"""Reference checkpoints from transformers: random weights, random BatchNorm running statistics.

Default initialisation hides bugs (BatchNorm stats of 0 and 1, zero biases), so every parameter and
buffer is redrawn. Weights get std 1/sqrt(fan_in) so activations stay O(1) through the layers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import transformers

CLASS_NAMES = ("PatchTSTModel", "PatchTSTForPrediction", "PatchTSTForPretraining", "PatchTSTForClassification",
               "PatchTSTForRegression")


def randomize_(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    config = model.config
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("position_enc") and config.positional_encoding_type == "sincos":
                continue  # a fixed table, not learned; detection recognises it
            if parameter.ndim == 2 and not name.endswith("position_enc"):
                std = 1.0 / math.sqrt(parameter.shape[1])
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
            elif "norm" in name and name.endswith("weight"):
                parameter.copy_(torch.rand(parameter.shape, generator=generator) + 0.5)
            else:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.5)
            elif name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=generator) * 1.5 + 0.5)


def build_reference(class_name: str, seed: int = 0, torch_dtype=torch.float32, **config_kwargs):
    """A transformers PatchTST of ``class_name`` in eval mode, every weight and statistic random."""
    torch.manual_seed(seed)
    config = transformers.PatchTSTConfig(**config_kwargs)
    model = getattr(transformers, class_name)(config).eval()
    randomize_(model, seed)
    return model.to(torch_dtype)


def state_dict_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {name: tensor.detach().cpu().numpy() for name, tensor in model.state_dict().items()}


def realistic_series(rng: np.random.Generator, batch: int, time: int, channels: int) -> np.ndarray:
    """Series with per-channel offsets and scales, a trend and a daily-like cycle, like real data."""
    offsets = rng.uniform(-50, 50, size=(batch, 1, channels))
    scales = 10.0 ** rng.uniform(-1, 2, size=(batch, 1, channels))
    t = np.arange(time)[None, :, None]
    cycle = np.sin(2 * np.pi * t / rng.uniform(6, 30, size=(batch, 1, channels)))
    trend = rng.normal(0, 0.02, size=(batch, 1, channels)) * t
    noise = rng.normal(0, 0.3, size=(batch, time, channels))
    return offsets + scales * (cycle + trend + noise)



from rustml_nb.parity import reference_outputs as run_reference  # noqa: E402  (one implementation, shared)
