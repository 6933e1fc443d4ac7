"""Parity with the reference implementations: run the reference model and measure every output field's
difference. The reference is transformers (PatchTST, PatchTSMixer) or granite-tsfm (TinyTimeMixer: a family
module's ``REFERENCE`` names the module that holds its classes).

Used by the test suite and by ``rustml-nb parity``. Needs torch and the reference package, imported on first
use.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import sys
import types

import numpy as np

# float64 against transformers in float64, float32 against float32; relative to 1 + max |reference|.
TOLERANCE = {"float64": 1e-9, "float32": 2e-4}


@dataclasses.dataclass
class Difference:
    field: str
    max_abs: float
    relative: float  # max_abs / (1 + max |reference|)
    shape_ok: bool

    def within(self, tolerance: float) -> bool:
        return self.shape_ok and self.relative <= tolerance


def randomize_(model, seed: int) -> None:
    """Redraw every parameter and BatchNorm statistic: default initialisation (BatchNorm stats of 0 and 1,
    zero biases) hides bugs. Weights get std 1/sqrt(fan_in) so activations stay O(1) through the layers;
    a sincos positional table is left as it is (it is fixed, not learned)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    config = model.config
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("position_enc") and config.positional_encoding_type == "sincos":
                continue
            if parameter.ndim == 2 and not name.endswith("position_enc"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / math.sqrt(parameter.shape[1]))
            elif "norm" in name and name.endswith("weight"):
                parameter.copy_(torch.rand(parameter.shape, generator=generator) + 0.5)
            else:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.5)
            elif name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=generator) * 1.5 + 0.5)


def random_reference_model(class_name: str, seed: int = 0, torch_dtype=None, reference: str = "transformers",
                           **config_kwargs):
    """A reference model of ``class_name`` (built from its config class with ``config_kwargs``; ``reference``:
    the module holding it, see ``reference_module``) in eval mode, every weight and statistic random."""
    import torch

    torch.manual_seed(seed)
    model_class = getattr(reference_module(reference), class_name)
    model = model_class(model_class.config_class(**config_kwargs)).eval()
    randomize_(model, seed)
    return model.to(torch_dtype or torch.float32)


# A reference module's top package -> (its distribution, how to install it).
REFERENCE_PACKAGES = {
    "transformers": ("transformers", "pip install torch==2.13.0 transformers"),
    "tsfm_public": ("granite-tsfm", "pip install torch==2.13.0 transformers && pip install --no-deps granite-tsfm==0.3.11"),
}


def reference_module(name: str):
    """The module holding a family's reference classes. granite-tsfm's model module is imported without
    running its package ``__init__``, which imports its whole toolkit (datasets, scikit-learn)."""
    if name.startswith("tsfm_public.") and name not in sys.modules:
        spec = importlib.util.find_spec("tsfm_public")
        if spec is None:
            raise ImportError("granite-tsfm is not installed: pip install --no-deps granite-tsfm==0.3.11")
        root = spec.submodule_search_locations[0]
        for package, path in (("tsfm_public", root), ("tsfm_public.models", f"{root}/models")):
            if package not in sys.modules:
                module = types.ModuleType(package)
                module.__path__ = [path]
                sys.modules[package] = module
    return importlib.import_module(name)


def load_reference(module, class_name: str, folder, torch_dtype):
    """The reference class's model for a checkpoint folder, in eval mode. Built from its config and state
    dict rather than with ``from_pretrained``, which granite-tsfm's bare TinyTimeMixerModel fails on under
    transformers 5 (it never runs transformers' post-init)."""
    import torch
    from safetensors.torch import load_file

    from .bundle import find_weight_files

    model_class = getattr(module, class_name)
    state = {}
    for path in find_weight_files(folder):
        state.update(load_file(path))
    return _reference(model_class, model_class.config_class.from_pretrained(folder), state, torch_dtype)


def reference_from_weights(module, class_name: str, config: dict, tensors: dict, torch_dtype):
    """The reference class's model for a config dict and checkpoint-named arrays (a checkpoint read from an
    ONNX file, which transformers cannot load), in eval mode."""
    import torch

    model_class = getattr(module, class_name)
    state = {name: torch.from_numpy(np.array(array)) for name, array in tensors.items()}
    return _reference(model_class, model_class.config_class(**config), state, torch_dtype)


def _reference(model_class, config, state, torch_dtype):
    import torch

    model = model_class(config)
    model.load_state_dict(state)
    return model.to(torch_dtype or torch.float32).eval()


def _masking_module(mask, mask_value):
    import torch

    class FixedMasking(torch.nn.Module):
        """Stands in for transformers' random masking with a given patch mask (None: mask nothing)."""

        def forward(self, patch_input):
            chosen = (torch.zeros(patch_input.shape[:3], dtype=torch.bool) if mask is None
                      else torch.from_numpy(np.asarray(mask, dtype=bool)))
            return patch_input.masked_fill(chosen[..., None], mask_value), chosen

    return FixedMasking()


def reference_outputs(model, values: np.ndarray, observed: np.ndarray | None = None, mask: np.ndarray | None = None,
                      output_hidden_states: bool = False, **inputs):
    """transformers' forward in the model's own dtype. Pretraining (or an explicit ``mask``) masks exactly
    ``mask`` instead of at random, so the two implementations see the same input. ``observed`` goes in as
    the class's observed-mask argument (PatchTST's ``past_observed_mask``, PatchTSMixer's ``observed_mask``);
    a class without one (PatchTSMixer's classification and regression) gets none. ``inputs``: more arrays by
    the reference's argument names (TinyTimeMixer's ``freq_token``)."""
    import inspect

    import torch

    base = getattr(model, "model", model)  # a bare ...Model is its own base
    if getattr(base, "do_mask_input", False) or getattr(base, "masking", None) is not None or mask is not None:
        base.do_mask_input = True  # PatchTST's switch; PatchTSMixer masks whenever it has a masking module
        base.masking = _masking_module(mask, model.config.mask_value)
    dtype = next(model.parameters()).dtype
    kwargs = {"past_values": torch.from_numpy(np.asarray(values)).to(dtype), "output_hidden_states": output_hidden_states}
    accepted = inspect.signature(model.forward).parameters
    argument = next((name for name in ("past_observed_mask", "observed_mask") if name in accepted), None)
    if observed is not None and argument is not None:
        kwargs[argument] = torch.from_numpy(np.asarray(observed)).to(dtype)
    kwargs.update({name: torch.from_numpy(np.asarray(value)) for name, value in inputs.items()})
    with torch.no_grad():
        return model(**kwargs)


def _numpy(value):
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


def field_differences(ours, theirs) -> list[Difference]:
    """One ``Difference`` per array of every field our output has (tuples element by element; the
    hidden states as ``hidden_states[i]``, the input of encoder layer i)."""
    rows = []
    for field, value in vars(ours).items():
        if value is None or field == "mask":
            continue
        expected = getattr(theirs, field)
        several = isinstance(value, (tuple, list))
        pairs = list(zip(value, expected)) if several else [(value, expected)]
        if several and (not isinstance(expected, (tuple, list)) or len(value) != len(expected)):
            rows.append(Difference(field, float("inf"), float("inf"), False))
            continue
        for i, (a, b) in enumerate(pairs):
            a, b = _numpy(a), _numpy(b)
            name = f"{field}[{i}]" if several else field
            if a.shape != b.shape:
                rows.append(Difference(name, float("inf"), float("inf"), False))
                continue
            max_abs = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max(initial=0.0))
            rows.append(Difference(name, max_abs, max_abs / (1.0 + float(np.abs(b).max(initial=0.0))), True))
    return rows
