"""Test helpers: a transformers PatchTST exported to ONNX the ways users export it."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

# The ModelOutput field each class is exported for (a distribution head's parameters come as a tuple).
MAIN_OUTPUT = {"PatchTSTModel": "last_hidden_state", "PatchTSTForPrediction": "prediction_outputs",
               "PatchTSTForPretraining": "prediction_output", "PatchTSTForClassification": "prediction_logits",
               "PatchTSTForRegression": "regression_outputs"}
# dynamo: torch.onnx.export(dynamo=True), its default; *_inline: weights inside the .onnx; *_noopt:
# optimize=False; legacy: the TorchScript exporter (dynamo=False), *_nofold without constant folding;
# ort: a dynamo export rewritten by onnxruntime's offline optimiser; stripped: a dynamo export with node
# names and metadata removed.
# (ort_bias_gelu, not drawn: onnxruntime's optimiser with its MatMul + Add fusion off, so that the bias of the
# feed-forward's first Linear goes into a BiasGelu.)
ROUTES = ("dynamo", "dynamo_inline", "dynamo_noopt", "legacy", "legacy_nofold", "ort", "stripped")


def export(reference, route: str, path: Path, batch: int = 2) -> Path:
    """Export ``reference`` (a transformers PatchTST in eval mode) to ``path`` by ``route``."""
    import torch

    class Outputs(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, past_values):
            value = getattr(self.model(past_values=past_values), MAIN_OUTPUT[type(self.model).__name__])
            return tuple(value) if isinstance(value, tuple) else value

    config = reference.config
    example = torch.randn(batch, config.context_length, config.num_input_channels, dtype=torch.float32)
    module = Outputs(reference).eval()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        if route.startswith("legacy"):
            torch.onnx.export(module, (example,), str(path), dynamo=False, input_names=["past_values"],
                              do_constant_folding=route == "legacy")
            return path
        torch.onnx.export(module, (example,), str(path), dynamo=True, input_names=["past_values"],
                          optimize=route != "dynamo_noopt", external_data=route not in ("dynamo_inline", "ort", "ort_bias_gelu"))
    if route in ("ort", "ort_bias_gelu"):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(path.with_name("optimized.onnx"))
        onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                     disabled_optimizers=["MatMulAddFusion"] if route == "ort_bias_gelu" else None)
        for old in path.parent.glob(path.name + "*"):
            old.unlink()
        path.with_name("optimized.onnx").rename(path)
    elif route == "stripped":
        import onnx

        model = onnx.load(str(path))
        for node in model.graph.node:
            del node.metadata_props[:]
            node.name = ""
        for old in path.parent.glob(path.name + "*"):
            old.unlink()
        onnx.save(model, str(path))
    return path
