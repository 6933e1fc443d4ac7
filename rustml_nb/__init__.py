"""rustml_nb: Hugging Face PatchTST checkpoints on the CPU, in Numba-compiled NumPy, at parity with transformers."""

from .bundle import ModelBundle
from .config import PatchTSTConfig
from .detection import ArchitectureCheck, DetectionReport, check_patchtst_compatibility, detect_patchtst
from .errors import (ArchitectureMismatchError, CheckpointError, ConfigError, InputError, MissingFileError,
                     RustmlError, ShapeMismatchError, UnsupportedArchitectureError, UnsupportedDtypeError,
                     WeightMappingError)
from .formats import load_safetensors
from .hub import (HubApi, HubConnectionError, HubError, HubFileNotFoundError, NotCachedError, RepoNotFoundError,
                  RevisionNotFoundError)
from .mapping import WeightMappingResult, map_patchtst_weights
from .patchtst import (PatchTSTForClassification, PatchTSTForPrediction, PatchTSTForPretraining,
                       PatchTSTForRegression, PatchTSTModel, from_pretrained)

__version__ = "0.1.0"
