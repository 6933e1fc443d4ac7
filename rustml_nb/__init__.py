"""rustml_nb: Hugging Face time-series checkpoints (PatchTST, PatchTSMixer, TinyTimeMixer) on the CPU, in
Numba-compiled NumPy, at parity with their reference implementations."""

from .bundle import ModelBundle
from .errors import (ArchitectureMismatchError, CheckpointError, ConfigError, InputError, MissingFileError,
                     RustmlError, ShapeMismatchError, UnreadableFileError, UnsupportedArchitectureError,
                     UnsupportedDtypeError, WeightMappingError)
from .formats import load_safetensors
from .models.mapping import WeightMappingResult
from .registry import compile_kernels, from_pretrained
from .threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

# Each family's module is imported when one of its names is first used (a PatchTST user does not pay for
# the mixer families' imports), as the Hub layer is (huggingface_hub takes ~75 ms).
_FAMILY_NAMES = {
    "rustml_nb.models.patchtst": (
        "ArchitectureCheck", "DetectionReport", "PatchTSTConfig", "PatchTSTForClassification", "PatchTSTForPrediction",
        "PatchTSTForPretraining", "PatchTSTForRegression", "PatchTSTModel", "check_patchtst_compatibility",
        "detect_patchtst", "map_patchtst_weights"),
    "rustml_nb.models.patchtsmixer": (
        "PatchTSMixerConfig", "PatchTSMixerForPrediction", "PatchTSMixerForPretraining", "PatchTSMixerForRegression",
        "PatchTSMixerForTimeSeriesClassification", "PatchTSMixerModel", "check_patchtsmixer_compatibility",
        "detect_patchtsmixer", "map_patchtsmixer_weights"),
    "rustml_nb.models.tinytimemixer": (
        "TinyTimeMixerConfig", "TinyTimeMixerForPrediction", "TinyTimeMixerForDecomposedPrediction",
        "TinyTimeMixerModel", "check_tinytimemixer_compatibility", "detect_tinytimemixer", "get_model",
        "map_tinytimemixer_weights"),
}
_FAMILY_OF_NAME = {name: module for module, names in _FAMILY_NAMES.items() for name in names}
_HUB_NAMES = ("HubApi", "HubError", "HubConnectionError", "HubFileNotFoundError", "NotCachedError",
              "RepoNotFoundError", "RevisionNotFoundError")

__all__ = [
    "from_pretrained", "compile_kernels", "get_num_threads", "set_num_threads",
    "PatchTSTModel", "PatchTSTForPrediction", "PatchTSTForPretraining", "PatchTSTForClassification",
    "PatchTSTForRegression", "PatchTSTConfig", "ModelBundle", "load_safetensors", "map_patchtst_weights",
    "WeightMappingResult", "check_patchtst_compatibility", "detect_patchtst", "ArchitectureCheck", "DetectionReport",
    "PatchTSMixerModel", "PatchTSMixerForPrediction", "PatchTSMixerForPretraining",
    "PatchTSMixerForTimeSeriesClassification", "PatchTSMixerForRegression", "PatchTSMixerConfig",
    "map_patchtsmixer_weights", "check_patchtsmixer_compatibility", "detect_patchtsmixer",
    "TinyTimeMixerModel", "TinyTimeMixerForPrediction", "TinyTimeMixerForDecomposedPrediction",
    "TinyTimeMixerConfig", "map_tinytimemixer_weights",
    "check_tinytimemixer_compatibility", "detect_tinytimemixer", "get_model",
    "RustmlError", "CheckpointError", "UnsupportedDtypeError", "MissingFileError", "UnreadableFileError",
    "ConfigError", "WeightMappingError", "ShapeMismatchError", "ArchitectureMismatchError",
    "UnsupportedArchitectureError", "InputError",
    *_HUB_NAMES,
]


def __getattr__(name):
    import importlib

    if name in _FAMILY_OF_NAME:
        value = getattr(importlib.import_module(_FAMILY_OF_NAME[name]), name)
        globals()[name] = value  # found directly from now on
        return value
    if name in _HUB_NAMES:
        from . import hub

        return getattr(hub, name)
    if name == "dask":  # rustml_nb.dask: forecasting on a Dask cluster (imports dask when first used)
        return importlib.import_module(".dask", __name__)
    raise AttributeError(f"module 'rustml_nb' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
