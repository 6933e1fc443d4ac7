"""rustml_nb: Hugging Face PatchTST checkpoints on the CPU, in Numba-compiled NumPy, at parity with transformers."""

import os as _os

# Numba's threading layer: OpenMP first. A forward pass is one parallel launch whose threads call BLAS
# single-threaded (rustml_nb.threads), so nothing else wants the cores while OpenMP's workers spin, and
# their spinning makes the launch cheap: 2 us against 60 us for the sleeping workqueue workers, whose
# wake-ups on this VM also made batch-1 latency bimodal (median 2.6 ms with OpenMP, 3.5 ms without). Where
# there is no OpenMP runtime Numba falls back to TBB, then workqueue. The user's choice
# (NUMBA_THREADING_LAYER or NUMBA_THREADING_LAYER_PRIORITY) wins.
if "NUMBA_THREADING_LAYER" not in _os.environ and "NUMBA_THREADING_LAYER_PRIORITY" not in _os.environ:
    import numba as _numba

    _numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

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
