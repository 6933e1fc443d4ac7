"""Format layer and ModelBundle: dtypes, BF16/F16 widening, shards, and every kind of bad file."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from safetensors.torch import save_file

import rustml_nb
from rustml_nb.errors import (CheckpointError, ConfigError, MissingFileError, RustmlError, UnsupportedDtypeError)
from rustml_nb.formats import load_safetensors
from reference import build_reference, state_dict_numpy

SMALL = dict(num_input_channels=2, context_length=12, patch_length=4, patch_stride=4, d_model=8,
             num_attention_heads=2, ffn_dim=8, num_hidden_layers=2, prediction_length=3)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = build_reference("PatchTSTForPrediction", seed=5, **SMALL)
    folder = tmp_path_factory.mktemp("prediction")
    model.save_pretrained(folder)
    return model, folder


def test_every_dtype_reads_under_the_checkpoint_names(tmp_path):
    tensors = {
        "f32": torch.randn(3, 4), "f64": torch.randn(2, dtype=torch.float64), "f16": torch.randn(5).half(),
        "bf16": torch.randn(2, 3).bfloat16(), "i64": torch.tensor(7), "i32": torch.arange(4, dtype=torch.int32),
        "bool": torch.tensor([True, False]),
    }
    save_file(tensors, tmp_path / "x.safetensors")
    loaded = load_safetensors(tmp_path / "x.safetensors")
    assert set(loaded) == set(tensors)
    assert loaded["f16"].dtype == np.float16 and loaded["bf16"].dtype == np.float32
    for name, tensor in tensors.items():
        expected = tensor.float().numpy() if name == "bf16" else tensor.numpy()
        np.testing.assert_array_equal(loaded[name], expected)
        assert loaded[name].shape == tuple(tensor.shape)


@given(st.lists(st.integers(0, 2**16 - 1), min_size=1, max_size=64))
def test_bf16_widening_is_bit_exact(bit_patterns):
    """Every bfloat16 bit pattern (NaN payloads included) widens to the float32 torch gives."""
    bits = torch.tensor(np.array(bit_patterns, dtype=np.uint16).view(np.int16))
    expected = bits.view(torch.bfloat16).float().view(torch.int32).numpy()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.safetensors"
        path.write_bytes(save_as_bytes({"x": bits.view(torch.bfloat16)}))
        widened = load_safetensors(path)["x"]
    np.testing.assert_array_equal(widened.view(np.int32), expected)


@given(st.lists(st.integers(0, 2**16 - 1), min_size=1, max_size=64))
def test_f16_widening_into_the_model_dtype_is_exact(bit_patterns):
    values = np.array(bit_patterns, dtype=np.uint16).view(np.float16)
    for dtype in (np.float32, np.float64):
        widened = rustml_nb.models.layers.weight_array(values, dtype)
        expected = torch.from_numpy(values).to(torch.float32 if dtype == np.float32 else torch.float64).numpy()
        np.testing.assert_array_equal(widened, expected)


def save_as_bytes(tensors):
    from safetensors.torch import save
    return save(tensors)


def test_sharded_checkpoint_loads_whole(tmp_path):
    model = build_reference("PatchTSTForPrediction", seed=1, **SMALL)
    model.save_pretrained(tmp_path, max_shard_size="2KB")
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    bundle = rustml_nb.ModelBundle.from_dir(tmp_path)
    assert [p.name for p in bundle.weight_files] == ["model.safetensors.index.json"]
    loaded = bundle.load_tensors()
    expected = state_dict_numpy(model)
    assert set(loaded) == set(expected)
    for name in expected:
        np.testing.assert_array_equal(loaded[name], expected[name])
    assert bundle.config.d_model == 8 and bundle.config.architectures == ["PatchTSTForPrediction"]


@pytest.mark.parametrize("torch_dtype", [torch.bfloat16, torch.float16])
def test_half_precision_checkpoints_run_at_parity(tmp_path, torch_dtype):
    """A bf16/f16 checkpoint widens exactly: we match transformers run in float32 on the same rounded weights."""
    from reference import realistic_series, run_reference
    from test_parity import compare_outputs
    model = build_reference("PatchTSTForPrediction", seed=2, **SMALL).to(torch_dtype)
    model.save_pretrained(tmp_path)
    ours = rustml_nb.from_pretrained(tmp_path, dtype="float32")
    values = realistic_series(np.random.default_rng(0), 3, 12, 2).astype(np.float32)
    compare_outputs(ours(values), run_reference(model.float(), values), "float32")


def test_header_that_lies_about_offsets(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 64]}}).encode()
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_safetensors(tmp_path / "bad.safetensors")


def test_truncated_file_names_the_file(checkpoint, tmp_path):
    data = (checkpoint[1] / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_safetensors(tmp_path / "model.safetensors")


def test_unsupported_dtype_names_tensor_and_dtype(tmp_path):
    save_file({"w": torch.zeros(3).to(torch.float8_e4m3fn)}, tmp_path / "f8.safetensors")
    with pytest.raises(UnsupportedDtypeError, match=r"'w'.*F8_E4M3"):
        load_safetensors(tmp_path / "f8.safetensors")


def test_missing_config_json(checkpoint, tmp_path):
    (tmp_path / "model.safetensors").write_bytes((checkpoint[1] / "model.safetensors").read_bytes())
    with pytest.raises(MissingFileError, match="config.json"):
        rustml_nb.ModelBundle.from_dir(tmp_path)


def test_config_for_another_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(ConfigError, match=r"model_type 'bert' is not one rustml_nb runs; it runs 'patchtst'"):
        rustml_nb.ModelBundle.from_dir(tmp_path)


def test_config_that_is_not_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="config.json"):
        rustml_nb.ModelBundle.from_dir(tmp_path)


@pytest.mark.parametrize("field, value, message", [
    ("norm_type", "groupnorm", "norm_type must be one of"),
    ("d_model", 10, r"d_model \(10\) must be divisible by num_attention_heads \(4\)"),
    ("patch_length", 64, r"context_length \(32\) must be greater than patch_length \(64\)"),
    ("activation_function", "swish", "activation_function must be one of"),
    ("num_input_channels", 0, "num_input_channels must be a positive integer, got 0"),
])
def test_invalid_config_values(field, value, message):
    with pytest.raises(ConfigError, match=message):
        rustml_nb.PatchTSTConfig.from_dict({"model_type": "patchtst", field: value})


def test_shard_index_naming_a_missing_file(tmp_path):
    model = build_reference("PatchTSTForPrediction", seed=1, **SMALL)
    model.save_pretrained(tmp_path, max_shard_size="2KB")
    shard = sorted(tmp_path.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(MissingFileError, match=shard.name):
        rustml_nb.ModelBundle.from_dir(tmp_path).load_tensors()


def test_pytorch_pickle_only_is_refused_with_advice(checkpoint, tmp_path):
    (tmp_path / "config.json").write_text((checkpoint[1] / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled, ever")
    with pytest.raises(MissingFileError, match="safe_serialization=True"):
        rustml_nb.ModelBundle.from_dir(tmp_path)


@given(data=st.data())
def test_corrupted_checkpoints_raise_only_typed_errors(checkpoint, tmp_path_factory, data):
    """Random truncation, byte flips and header edits: the load either succeeds or raises a RustmlError."""
    source = checkpoint[1]
    raw = bytearray((source / "model.safetensors").read_bytes())
    header_length = struct.unpack("<Q", raw[:8])[0]
    how = data.draw(st.sampled_from(["truncate", "flip", "flip header", "length"]))
    if how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif how == "length":
        raw[:8] = struct.pack("<Q", data.draw(st.integers(0, 2**64 - 1)))
    else:
        end = 8 + header_length if how == "flip header" else len(raw)
        for _ in range(data.draw(st.integers(1, 8))):
            raw[data.draw(st.integers(0, end - 1))] = data.draw(st.integers(0, 255))
    folder = tmp_path_factory.mktemp("corrupt")
    (folder / "config.json").write_text((source / "config.json").read_text())
    (folder / "model.safetensors").write_bytes(bytes(raw))
    try:
        model = rustml_nb.from_pretrained(folder)
    except RustmlError:
        return
    output = model(np.zeros((1, SMALL["context_length"], SMALL["num_input_channels"]), np.float32))
    assert output.prediction_outputs.shape == (1, SMALL["prediction_length"], SMALL["num_input_channels"])
