"""``ModelBundle``: a checkpoint folder (``config.json`` + safetensors) as a parsed config and weight files; or
an exported ONNX model (a ``.onnx`` file, or a folder holding ``model.onnx``), its weights named from its graph
and its config read from a ``config.json`` beside it or recovered from the graph."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from .errors import ConfigError, MissingFileError
from .files import CONFIG_MAX_BYTES, read_json
from .formats import ONNX_SINGLE, SAFETENSORS_INDEX, SAFETENSORS_SINGLE, load_weight_files

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
    onnx: object = None  # the family's OnnxLoad when the weights come out of an ONNX file

    @classmethod
    def from_onnx(cls, path) -> "ModelBundle":
        """An exported ONNX model: weights named from the graph, the config from ``config.json`` beside the
        file or, without one, recovered from the graph (never running it). Warns about files whose graph is
        known to be wrong."""
        import warnings

        from .errors import RustmlWarning
        from .formats.onnx import OnnxGraph
        from .registry import family_of_onnx

        path = Path(path)
        graph = OnnxGraph(path)
        config_path = path.parent / CONFIG_NAME
        config = read_config(config_path) if config_path.exists() else None
        loaded = family_of_onnx(graph, config).load_onnx(graph, config)
        for message in loaded.warnings:
            warnings.warn(message, RustmlWarning, stacklevel=3)
        files = [path] + [path.parent / name for name in graph.external_files]
        return cls(config=loaded.config, weight_files=files, root=path.parent, onnx=loaded)

    @classmethod
    def from_dir(cls, path) -> "ModelBundle":
        root = Path(path)
        if not root.is_dir():
            raise MissingFileError(f"checkpoint folder not found: {root}")
        if not any((root / name).exists() for name in (SAFETENSORS_SINGLE, SAFETENSORS_INDEX)) \
                and (root / ONNX_SINGLE).exists():
            return cls.from_onnx(root / ONNX_SINGLE)
        if not (root / CONFIG_NAME).exists():
            raise MissingFileError(f"{root} is not a checkpoint folder: it has no {CONFIG_NAME}")
        return cls(config=read_config(root / CONFIG_NAME), weight_files=find_weight_files(root), root=root)

    def load_tensors(self) -> dict[str, np.ndarray]:
        """All tensors under the checkpoint's own names (BF16 widened to float32)."""
        if self.onnx is not None:
            return dict(self.onnx.tensors)
        return load_weight_files(self.weight_files)


def load_bundle(repo_id_or_path, revision=None, cache_dir=None, token=None, local_files_only=False,
                progress=None) -> ModelBundle:
    """A folder that exists is local; anything else is a Hub repo id. huggingface_hub (~0.1 s to import) is
    imported only for a repo id."""
    if not isinstance(repo_id_or_path, (str, os.PathLike)):
        raise MissingFileError(f"expected a checkpoint folder or a Hub repo id (a string or a path), got "
                               f"{type(repo_id_or_path).__name__} {repo_id_or_path!r}"[:200])
    text = os.fspath(repo_id_or_path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text.strip():
        raise MissingFileError("no model given: expected a checkpoint folder or a Hub repo id (org/name)")
    try:
        path = Path(text).expanduser()
        is_folder, exists = path.is_dir(), path.exists()
    except (RuntimeError, OSError, ValueError) as error:  # ~nouser, a name too long, a NUL byte
        raise MissingFileError(f"{text!r} is neither an existing folder nor a valid Hub repo id ({error})"[:300]) from None
    if is_folder:
        return ModelBundle.from_dir(path)
    if path.suffix.lower() == ".onnx":
        return ModelBundle.from_onnx(path)
    if exists or text.startswith((".", "/", "~")) or "\\" in text:
        raise MissingFileError(f"{text}: not a checkpoint folder")
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    from .hub import HubApi

    try:
        validate_repo_id(text)
    except HFValidationError:
        raise MissingFileError(f"{text!r} is neither an existing folder nor a valid Hub repo id (org/name)") from None
    return HubApi(cache_dir=cache_dir, token=token, progress=progress).download_model(
        text, revision=revision, local_files_only=local_files_only)
