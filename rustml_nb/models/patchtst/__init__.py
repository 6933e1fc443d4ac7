"""PatchTST (transformers' ``models/patchtst``): every class and switch transformers can write."""

from .config import PatchTSTConfig
from .detection import (ARCHITECTURE_HEADS, ArchitectureCheck, DetectionReport, check_patchtst_compatibility,
                        detect_patchtst)
from ..mapping import WeightMappingResult
from .mapping import map_patchtst_weights
from .model import (MODEL_CLASSES, PatchTSTForClassification, PatchTSTForPrediction, PatchTSTForPretraining,
                    PatchTSTForRegression, PatchTSTModel, compile_kernels)

CONFIG = PatchTSTConfig
NAME = "PatchTST"
map_weights = map_patchtst_weights


def check_compatibility(mapped, config):
    return check_patchtst_compatibility(mapped, config)


REFERENCE = "transformers"  # the module holding the reference classes (rustml_nb.parity)
HIDDEN_STATE = "input of encoder layer"  # what hidden_states[i] is, for parity reports


def describe(config: PatchTSTConfig, model_class, check) -> list[str]:
    """rustml-nb inspect's summary of a checkpoint: its shape, encoder, head and what the weights show."""
    distribution = (config.has_distribution_head and model_class.head in ("prediction", "regression"))
    lines = [
        f"shape        {config.num_input_channels} channels x {config.context_length} steps -> "
        f"{config.num_patches} patches of {config.patch_length} (stride {config.patch_stride})"
        + (f" -> {config.prediction_length} steps ahead" if model_class.head == "prediction" else ""),
        f"encoder      {config.num_hidden_layers} layers, d_model {config.d_model}, "
        f"{config.num_attention_heads} heads, ffn {config.ffn_dim}, {config.norm_type}, "
        f"{'pre' if config.pre_norm else 'post'}-norm, {config.activation_function}",
        f"scaling      {config.scaler}; pooling {config.pooling_type}; cls token {config.use_cls_token}; "
        f"head {'distribution ' + config.distribution_output if distribution else 'point'}",
        f"\ndetected     {check.kind} (embedding input {check.got}; CI expects {check.expected_ci}, "
        f"CD expects {check.expected_cd})",
    ]
    lines += [f"  {field:<31}{value}" for field, value in vars(check.report).items()]
    return lines


def load_onnx(graph, config=None):
    """A checkpoint out of an exported ONNX graph (see ``models.patchtst.onnx``, imported only for ONNX files)."""
    from .onnx import load_onnx as load

    return load(graph, config)


def looks_like_onnx(graph) -> bool:
    from .onnx import looks_like_patchtst

    return looks_like_patchtst(graph)
