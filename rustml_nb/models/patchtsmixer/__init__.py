"""PatchTSMixer (transformers' ``models/patchtsmixer``): every class and switch transformers can write."""

from ..mapping import WeightMappingResult  # noqa: F401
from .config import PatchTSMixerConfig
from .detection import (ARCHITECTURE_HEADS, ArchitectureCheck, DetectionReport, check_patchtsmixer_compatibility,
                        detect_patchtsmixer)
from .mapping import map_patchtsmixer_weights
from .model import (MODEL_CLASSES, PatchTSMixerForPrediction, PatchTSMixerForPretraining, PatchTSMixerForRegression,
                    PatchTSMixerForTimeSeriesClassification, PatchTSMixerModel, compile_kernels)

CONFIG = PatchTSMixerConfig
NAME = "PatchTSMixer"
REFERENCE = "transformers"  # the module holding the reference classes (rustml_nb.parity)
HIDDEN_STATE = "output of mixer layer"  # what hidden_states[i] is, for parity reports
map_weights = map_patchtsmixer_weights


def check_compatibility(mapped, config):
    return check_patchtsmixer_compatibility(mapped, config)


def describe(config: PatchTSMixerConfig, model_class, check) -> list[str]:
    """rustml-nb inspect's summary of a checkpoint: its shape, mixer, head and what the weights show."""
    distribution = config.has_distribution_head and model_class.head in ("prediction", "regression")
    lines = [
        f"shape        {config.num_input_channels} channels x {config.context_length} steps -> "
        f"{config.num_patches} patches of {config.patch_length} (stride {config.patch_stride})"
        + (f" -> {config.prediction_length} steps ahead of channels {config.output_channels}"
           if model_class.head == "prediction" else ""),
        f"mixer        {config.num_layers} layers, {config.mode}, d_model {config.d_model}, expansion "
        f"{config.expansion_factor}, {'BatchNorm' if config.batch_norm else 'LayerNorm'}, gated attention "
        f"{config.gated_attn}, self-attention {f'{config.self_attn_heads} heads' if config.self_attn else 'off'}, "
        f"positions {config.positional_encoding_type if config.use_positional_encoding else 'off'}",
        f"scaling      {config.scaler}; head {'distribution ' + config.distribution_output if distribution else 'point'}"
        + (f", aggregation {config.head_aggregation}, scale injection {config.injects_scale}"
           if model_class.head in ("classification", "regression") else ""),
        "\ndetected",
    ]
    lines += [f"  {field:<31}{value}" for field, value in vars(check.report).items()]
    return lines
