"""Bad inference input gets a typed error naming what was expected and what came."""

from __future__ import annotations

import numpy as np
import pytest

import rustml_nb
from rustml_nb.errors import ConfigError, InputError
from reference import build_reference, state_dict_numpy

SMALL = dict(num_input_channels=2, context_length=12, patch_length=4, patch_stride=4, d_model=8,
             num_attention_heads=2, ffn_dim=8, num_hidden_layers=1, prediction_length=3)


@pytest.fixture(scope="module")
def models():
    built = {}
    for name in ("PatchTSTForPrediction", "PatchTSTForPretraining"):
        reference = build_reference(name, seed=0, **SMALL)
        config = rustml_nb.PatchTSTConfig.from_dict(reference.config.to_dict())
        built[name] = getattr(rustml_nb, name).from_hub_weights(config, state_dict_numpy(reference))
    return built


@pytest.mark.parametrize("values, message", [
    (np.zeros((2, 2, 12, 2)), r"got 4-D shape \(2, 2, 12, 2\)"),
    (np.zeros(12), "got 1-D"),
    (np.zeros((1, 10, 2)), r"expected \[batch, 12, 2\] .* got \[1, 10, 2\]"),
    (np.zeros((1, 12, 3)), r"expected \[batch, 12, 2\] .* got \[1, 12, 3\]"),
    (np.zeros((12, 3)), r"got \[12, 3\]"),
    (np.zeros((1, 12, 2), dtype=np.int64), "must be a float array, got dtype int64"),
    (np.zeros((1, 12, 2), dtype=bool), "must hold real numbers, got dtype bool"),
    (np.array([["a"] * 2] * 12), "must hold real numbers"),
    (np.zeros((0, 12, 2)), "the batch is empty"),
])
def test_bad_past_values(models, values, message):
    with pytest.raises(InputError, match=message):
        models["PatchTSTForPrediction"](values)


def test_bad_observed_mask(models):
    model = models["PatchTSTForPrediction"]
    values = np.ones((2, 12, 2))
    with pytest.raises(InputError, match=r"past_observed_mask: expected shape \[2, 12, 2\] .* got \[2, 12\]"):
        model(values, np.ones((2, 12)))
    with pytest.raises(InputError, match="only 0 and 1"):
        model(values, np.full((2, 12, 2), 0.5))
    values[1, 4, 0] = np.nan
    with pytest.raises(InputError, match=r"past_values\[1, 4, 0\] is nan but past_observed_mask marks it observed"):
        model(values, np.ones((2, 12, 2), dtype=bool))
    values[1, 4, 0] = np.inf
    with pytest.raises(InputError, match=r"is inf"):
        model(values, np.ones((2, 12, 2), dtype=bool))


def test_bad_patch_mask(models):
    with pytest.raises(InputError, match=r"mask: expected shape \[1, 2, 3\] .* got \[1, 3\]"):
        models["PatchTSTForPretraining"](np.ones((1, 12, 2)), mask=np.zeros((1, 3), dtype=bool))


def test_unknown_dtype(models):
    reference = build_reference("PatchTSTForPrediction", seed=0, **SMALL)
    config = rustml_nb.PatchTSTConfig.from_dict(reference.config.to_dict())
    with pytest.raises(ConfigError, match="dtype must be one of .* got 'float16'"):
        rustml_nb.PatchTSTForPrediction.from_hub_weights(config, state_dict_numpy(reference), dtype="float16")


def test_a_list_of_lists_is_accepted(models):
    values = np.random.default_rng(0).normal(size=(12, 2))
    np.testing.assert_array_equal(models["PatchTSTForPrediction"](values.tolist()).prediction_outputs,
                                  models["PatchTSTForPrediction"](values).prediction_outputs)


def test_values_beyond_float32_are_refused_not_turned_into_nan(models):
    """1e39 is finite in float64 and inf in float32: it used to pass the check and give NaN forecasts."""
    model = models["PatchTSTForPrediction"]
    values = np.random.default_rng(0).normal(size=(3, 12, 2))
    values[2, 5, 1] = 1e39
    with pytest.raises(InputError, match=r"past_values\[2, 5, 1\] is 1e\+39, beyond the range of the model's float32"):
        model(values)
    observed = np.ones_like(values)
    observed[2, 5, 1] = 0  # marked missing: then it is missing, whatever its value
    result = model(values, observed).prediction_outputs
    assert np.isfinite(result).all()
    zeroed = values.copy()
    zeroed[2, 5, 1] = 0
    np.testing.assert_array_equal(result, model(zeroed, observed).prediction_outputs)


@pytest.mark.parametrize("values, message", [
    ([[1.0, 2.0]] * 11 + [[1.0]], "rectangular array of numbers"),
    (np.zeros((1, 12, 2), dtype=complex), "must hold real numbers, got dtype complex128"),
    (np.array([[object()] * 2] * 12), "rectangular array of numbers, got objects"),
])
def test_unusable_arrays(models, values, message):
    with pytest.raises(InputError, match=message):
        models["PatchTSTForPrediction"](values)


def test_extra_memory_of_a_forward_pass_does_not_grow_with_the_batch():
    """Beyond its input and outputs a forward pass runs in bounded chunks (it used to take ~27 KiB more per
    batch element: 4 GiB at batch 150,000 of the demo model)."""
    import subprocess
    import sys
    import textwrap
    code = textwrap.dedent("""
        import numpy as np, rustml_nb
        from rustml_nb import demo
        def peak():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        model = rustml_nb.from_pretrained(demo.MODEL_PATH)
        model(np.zeros((700, 336, 2), np.float32))  # a full chunk: every buffer a chunk needs exists once
        values = np.random.default_rng(0).normal(40, 5, (40_000, 336, 2)).astype(np.float32)
        before = peak()
        out = model(values).prediction_outputs
        print("GROWTH", peak() - before - out.nbytes / 2**20)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert "GROWTH" in result.stdout, result.stderr[-2000:]
    growth = float(result.stdout.split("GROWTH")[1])
    assert growth < 80, f"{growth:.0f} MiB beyond input and output for a batch of 40,000 (108 MiB of input)"


def test_a_batch_whose_outputs_cannot_fit_in_memory():
    """A broadcast view costs no memory, so the batch can be any size: the outputs' allocation fails, and that
    is an InputError, not a bare MemoryError."""
    reference = build_reference("PatchTSTModel", seed=0, **SMALL)
    config = rustml_nb.PatchTSTConfig.from_dict(reference.config.to_dict())
    model = rustml_nb.PatchTSTModel.from_hub_weights(config, state_dict_numpy(reference))
    huge = np.broadcast_to(np.ones((1, 12, 2), np.float32), (10**10, 12, 2))
    with pytest.raises(InputError, match="do not fit in memory; run it in smaller batches"):
        model(huge)
