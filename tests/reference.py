"""Test helpers around transformers reference models (built and run by ``rustml_nb.parity``)."""

from __future__ import annotations

import numpy as np

from rustml_nb.parity import random_reference_model as build_reference  # noqa: F401  (shared with benchmarks)
from rustml_nb.parity import reference_outputs as run_reference  # noqa: F401

CLASS_NAMES = ("PatchTSTModel", "PatchTSTForPrediction", "PatchTSTForPretraining", "PatchTSTForClassification",
               "PatchTSTForRegression")


# Python source for a new process: `compiled` then lists the rustml_nb kernels that compile (cache misses).
COMPILE_COUNTER = """
import numba.core.event as event
compiled = []
class Count(event.Listener):
    def on_start(self, ev):
        function = getattr(ev.data.get("dispatcher"), "py_func", None)
        if (getattr(function, "__module__", None) or "").startswith("rustml_nb"):
            compiled.append(function.__qualname__)
    def on_end(self, ev):
        pass
event.register("numba:compile", Count())
"""


# Python source for a new process: at exit it prints SLICE_ASSIGNMENTS and the rustml_nb kernels whose compile
# pulled in Numba's message for a slice assignment's shape error (``out[a:b] = array`` compiles f-strings and
# str joins: seconds of a first run; kernels copy with loops or ``rows.copy_rows`` instead).
SLICE_ASSIGNMENT_WATCH = """
import atexit
import numba.core.event as event
callers, compiling = set(), []
class Watch(event.Listener):
    def on_start(self, ev):
        function = getattr(ev.data.get("dispatcher"), "py_func", None)
        name = f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', '')}"
        if "raise_with_shape_context" in name:
            callers.update(kernel for kernel in compiling if kernel.startswith("rustml_nb"))
        compiling.append(name)
    def on_end(self, ev):
        compiling.pop()
event.register("numba:compile", Watch())
atexit.register(lambda: print("SLICE_ASSIGNMENTS", sorted(callers)))
"""


def cli_watching_slice_assignments(*arguments: str) -> str:
    """Python source (for ``python -c``) running ``python -m rustml_nb *arguments`` with
    ``SLICE_ASSIGNMENT_WATCH`` installed first."""
    return (SLICE_ASSIGNMENT_WATCH + "import runpy, sys\n"
            f"sys.argv = ['rustml_nb', *{list(arguments)!r}]\n"
            "runpy.run_module('rustml_nb', run_name='__main__', alter_sys=True)\n")


def state_dict_numpy(model) -> dict[str, np.ndarray]:
    return {name: tensor.detach().cpu().numpy() for name, tensor in model.state_dict().items()}


def realistic_series(rng: np.random.Generator, batch: int, time: int, channels: int) -> np.ndarray:
    """Series with per-channel offsets and scales, a trend and a daily-like cycle, like real data."""
    offsets = rng.uniform(-50, 50, size=(batch, 1, channels))
    scales = 10.0 ** rng.uniform(-1, 2, size=(batch, 1, channels))
    t = np.arange(time)[None, :, None]
    cycle = np.sin(2 * np.pi * t / rng.uniform(6, 30, size=(batch, 1, channels)))
    trend = rng.normal(0, 0.02, size=(batch, 1, channels)) * t
    noise = rng.normal(0, 0.3, size=(batch, time, channels))
    return offsets + scales * (cycle + trend + noise)


def assert_each_series_as_alone(run, outputs, batch: int, observed=None, mean_scaled: bool = False):
    """Every output field of each batch element, bit for bit, is what ``run(i)`` (that element alone, a batch of
    one) gives. ``mean_scaled`` with an ``observed`` mask leaves out the elements with a channel of no observed
    value: the mean scaler gives them their batch's mean scale, as transformers does."""
    for i in range(batch):
        if mean_scaled and observed is not None and not observed[i].any(axis=0).all():
            continue
        alone = run(i)
        for field, value in vars(outputs).items():
            arrays = value if isinstance(value, tuple) else (value,)
            alone_arrays = getattr(alone, field)
            alone_arrays = alone_arrays if isinstance(alone_arrays, tuple) else (alone_arrays,)
            for k, (array, single) in enumerate(zip(arrays, alone_arrays)):
                if array is None or np.ndim(array) == 0:
                    continue
                assert array.shape[0] == batch, f"{field}: first axis {array.shape[0]}, not the batch {batch}"
                np.testing.assert_array_equal(array[i], single[0],
                                              err_msg=f"{field}[{k}] of batch element {i} differs from it alone")
