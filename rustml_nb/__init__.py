"""rustml_nb: Hugging Face PatchTST checkpoints on the CPU, in Numba-compiled NumPy, at parity with transformers."""

import os as _os

# Numba's OpenMP workers spin after a parallel loop and took the cores from whatever ran next (batch-1
# latency went from 6 ms to 112 ms on 2 cores when BLAS threads came next); the workqueue layer does not
# spin. A layer the user chose (NUMBA_THREADING_LAYER) wins.
if "NUMBA_THREADING_LAYER" not in _os.environ:
    import numba as _numba

    _numba.config.THREADING_LAYER = "workqueue"

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

__version__ = "0.1.0"

# The Hub layer imports huggingface_hub (~75 ms); loaded on first use so local loading starts faster.
_HUB_NAMES = ("HubApi", "HubError", "HubConnectionError", "HubFileNotFoundError", "NotCachedError",
              "RepoNotFoundError", "RevisionNotFoundError")


def __getattr__(name):
    if name in _HUB_NAMES:
        from . import hub

        return getattr(hub, name)
    raise AttributeError(f"module 'rustml_nb' has no attribute {name!r}")
