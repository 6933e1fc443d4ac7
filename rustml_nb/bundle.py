"""``ModelBundle``: a checkpoint folder (``config.json`` + safetensors) as a parsed config and weight files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .errors import ConfigError, MissingFileError
from .files import CONFIG_MAX_BYTES, read_json
from .formats import SAFETENSORS_INDEX, SAFETENSORS_SINGLE, load_weight_files

CONFIG_NAME = "config.json"
PYTORCH_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def find_weight_files(folder: Path) -> list[Path]:
    """The safetensors weight files of a checkpoint folder: the shard index if any, else model.safetensors."""
    index = folder / SAFETENSORS_INDEX
    if index.exists():  # not is_file(): a FIFO or device here is refused by name when it is opened
        return [index]
    single = folder / SAFETENSORS_SINGLE
    if single.exists():
        return [single]
    if any((folder / name).exists() for name in PYTORCH_WEIGHTS):
        raise MissingFileError(
            f"{folder} holds only PyTorch pickle weights (pytorch_model.bin), which rustml_nb does not load: "
            "unpickling can run arbitrary code and needs torch. Convert once with transformers: "
            "`AutoModel.from_pretrained(path).save_pretrained(path, safe_serialization=True)`."
        )
    raise MissingFileError(f"{folder}: no {SAFETENSORS_SINGLE} or {SAFETENSORS_INDEX}")


def read_config(path):
    """A checkpoint's config.json as its family's config dataclass."""
    from .registry import config_from_dict

    values = read_json(path, "config.json", CONFIG_MAX_BYTES, ConfigError)
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(values).__name__}")
    return config_from_dict(values, source=str(path))


@dataclasses.dataclass
class ModelBundle:
    """What a checkpoint folder holds: its config (the family's config class, as ``model_type`` says) and the
    paths of its weight files."""

    config: object
    weight_files: list[Path]
    root: Path

    @classmethod
    def from_dir(cls, path) -> "ModelBundle":
        root = Path(path)
        if not root.is_dir():
            raise MissingFileError(f"checkpoint folder not found: {root}")
        if not (root / CONFIG_NAME).exists():
            raise MissingFileError(f"{root} is not a checkpoint folder: it has no {CONFIG_NAME}")
        return cls(config=read_config(root / CONFIG_NAME), weight_files=find_weight_files(root), root=root)

    def load_tensors(self) -> dict[str, np.ndarray]:
        """All tensors under the checkpoint's own names (BF16 widened to float32)."""
        return load_weight_files(self.weight_files)
