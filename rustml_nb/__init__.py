"""rustml_nb: Hugging Face PatchTST checkpoints on the CPU, in Numba-compiled NumPy, at parity with transformers."""

from .bundle import ModelBundle
from .config import PatchTSTConfig
from .detection import ArchitectureCheck, DetectionReport, check_patchtst_compatibility, detect_patchtst
from .errors import (ArchitectureMismatchError, CheckpointError, ConfigError, InputError, MissingFileError,
                     RustmlError, ShapeMismatchError, UnsupportedArchitectureError, UnsupportedDtypeError,
                     WeightMappingError)
from .formats import load_safetensors
from .mapping import WeightMappingResult, map_patchtst_weights
from .patchtst import (PatchTSTForClassification, PatchTSTForPrediction, PatchTSTForPretraining,
                       PatchTSTForRegression, PatchTSTModel, from_pretrained)
from .threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

# The Hub layer imports huggingface_hub (~75 ms); loaded on first use so local loading starts faster.
_HUB_NAMES = ("HubApi", "HubError", "HubConnectionError", "HubFileNotFoundError", "NotCachedError",
              "RepoNotFoundError", "RevisionNotFoundError")


DTYPE_CHOICES = ("float32", "float64")


def compile_kernels(dtype: str = "float32") -> None:
    """Compile every kernel for ``dtype`` ("float32", "float64" or "all") into the cache ahead of time (for
    Docker images and CI), so that no later process waits for a compile. ``rustml-nb compile`` calls it."""
    from . import patchtst

    for name in DTYPE_CHOICES if dtype == "all" else (dtype,):
        patchtst.compile_kernels(name)


__all__ = [
    "from_pretrained", "compile_kernels", "get_num_threads", "set_num_threads",
    "PatchTSTModel", "PatchTSTForPrediction", "PatchTSTForPretraining", "PatchTSTForClassification",
    "PatchTSTForRegression", "PatchTSTConfig", "ModelBundle", "load_safetensors", "map_patchtst_weights",
    "WeightMappingResult", "check_patchtst_compatibility", "detect_patchtst", "ArchitectureCheck", "DetectionReport",
    "RustmlError", "CheckpointError", "UnsupportedDtypeError", "MissingFileError", "ConfigError", "WeightMappingError",
    "ShapeMismatchError", "ArchitectureMismatchError", "UnsupportedArchitectureError", "InputError",
    *_HUB_NAMES,
]


def __getattr__(name):
    if name in _HUB_NAMES:
        from . import hub

        return getattr(hub, name)
    raise AttributeError(f"module 'rustml_nb' has no attribute {name!r}")
