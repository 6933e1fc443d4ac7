"""One registry: config.json's ``model_type`` -> the model family that runs it. Nothing outside
``rustml_nb.models`` learns a family's name but through here; a family's module is imported (and its kernels
compiled) only when a checkpoint of that family is used."""

from __future__ import annotations

import importlib

from .errors import ArchitectureMismatchError, ConfigError

FAMILIES = {
    "patchtst": "rustml_nb.models.patchtst",
    "patchtsmixer": "rustml_nb.models.patchtsmixer",
    "tinytimemixer": "rustml_nb.models.tinytimemixer",
}


def family(model_type, source: str = "config.json"):
    """The family package for a ``model_type`` (its CONFIG, MODEL_CLASSES, ARCHITECTURE_HEADS, map_weights,
    check_compatibility, compile_kernels)."""
    if model_type not in FAMILIES:
        raise ConfigError(f"{source}: model_type {model_type!r} is not one rustml_nb runs; it runs "
                          f"{', '.join(repr(name) for name in FAMILIES)}")
    return importlib.import_module(FAMILIES[model_type])


ONNX_FAMILIES = ("patchtst",)  # the families whose ONNX exports rustml_nb reads (their module's load_onnx)


def family_of_onnx(graph, config=None):
    """The family that reads an ONNX graph: its config's, else the one whose exports it looks like."""
    if config is not None:
        module = family_of_config(config)
        if config.MODEL_TYPE not in ONNX_FAMILIES:
            raise ConfigError(f"{graph.path}: reading {module.NAME} weights out of ONNX files is not supported; "
                              f"ONNX files are read for {', '.join(ONNX_FAMILIES)}")
        return module
    for model_type in ONNX_FAMILIES:
        module = family(model_type)
        if module.looks_like_onnx(graph):
            return module
    from .errors import UnsupportedArchitectureError

    raise UnsupportedArchitectureError(
        f"{graph.path} does not look like an export of a model rustml_nb reads from ONNX ({', '.join(ONNX_FAMILIES)}) "
        f"and has no config.json beside it: found {graph.describe()}")


def config_from_dict(values: dict, source: str = "config.json"):
    """The family's config dataclass for a ``config.json`` dict."""
    return family(values.get("model_type"), source).CONFIG.from_dict(values, source=source)


def family_of_config(config):
    return family(config.MODEL_TYPE)


def model_class_for(config, tensors: dict, check=None):
    """The class of the config's family that config.json's ``architectures`` names; without one, the head the
    weights show (``check``: their compatibility check, when the caller has made it already)."""
    from .models.config import head_named

    module = family_of_config(config)
    head = head_named(config, module.ARCHITECTURE_HEADS)
    if head is None:
        check = check or module.check_compatibility(module.map_weights(tensors).mapped, config)
        head = check.report.head
    for cls in module.MODEL_CLASSES:
        if cls.head == head:
            return cls
    raise ArchitectureMismatchError(
        f"cannot tell which {module.NAME} class this checkpoint is: architectures={config.architectures}, weights "
        f"suggest {head!r}; expected one of {sorted(module.ARCHITECTURE_HEADS)}")


def from_pretrained(repo_id_or_path, revision=None, dtype: str = "float32", cache_dir=None, token=None,
                    local_files_only: bool = False, **config_overrides):
    """Load a checkpoint as the class its ``config.json`` names (``model_type`` picks the family,
    ``architectures`` the class; without one, the head the weights show).

    ``repo_id_or_path``: a folder that exists is local; otherwise a Hub repo id, downloaded into
    huggingface_hub's cache (``revision`` pins a branch, tag or commit; ``local_files_only`` never
    touches the network; ``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HUB_OFFLINE`` and ``HF_HOME`` apply).
    ``config_overrides``: config fields that replace config.json's, as transformers' ``from_pretrained``
    takes them (e.g. TinyTimeMixer's ``prediction_filter_length=24``).
    """
    from .bundle import load_bundle
    from .models.config import override_fields

    bundle = load_bundle(repo_id_or_path, revision, cache_dir, token, local_files_only)
    config = override_fields(bundle.config, config_overrides)
    tensors = bundle.load_tensors()
    model_class = model_class_for(config, tensors)
    return model_class.from_hub_weights(config, tensors, dtype)


def compile_kernels(dtype: str = "float32", families=None) -> None:
    """Compile every kernel of ``families`` (default: all) for ``dtype`` ("float32", "float64" or "all")."""
    for model_type in families or FAMILIES:
        module = family(model_type)
        for name in ("float32", "float64") if dtype == "all" else (dtype,):
            module.compile_kernels(name)
