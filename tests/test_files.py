"""Hostile and broken files: only regular files are read, only inside the checkpoint folder, headers are
validated before any tensor is read, and every failure is a RustmlError naming the file."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, strategies as st

import rustml_nb
from rustml_nb.errors import (CheckpointError, ConfigError, MissingFileError, RustmlError, ShapeMismatchError,
                              UnreadableFileError, WeightMappingError)
from rustml_nb.formats import load_safetensors
from reference import build_reference

SMALL = dict(num_input_channels=2, context_length=12, patch_length=4, patch_stride=4, d_model=8,
             num_attention_heads=2, ffn_dim=8, num_hidden_layers=1, prediction_length=3)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoint")
    build_reference("PatchTSTForPrediction", seed=3, **SMALL).save_pretrained(folder)
    return folder


@pytest.fixture
def copy(checkpoint, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoint, folder)
    return folder


def safetensors_bytes(header: dict, data: bytes = b"") -> bytes:
    encoded = json.dumps(header).encode() if isinstance(header, dict) else header
    return struct.pack("<Q", len(encoded)) + encoded + data


def run_with_timeout(code: str, timeout=120):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)


def test_config_json_as_a_fifo_is_refused_at_once(copy):
    (copy / "config.json").unlink()
    os.mkfifo(copy / "config.json")
    result = run_with_timeout(f"""
        import rustml_nb
        try:
            rustml_nb.from_pretrained({str(copy)!r})
        except rustml_nb.CheckpointError as error:
            print(error)
    """, timeout=60)
    assert "is a FIFO, not a regular file" in result.stdout, result.stderr


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_a_symlink_to_a_device_is_refused(copy, name):
    (copy / name).unlink()
    (copy / name).symlink_to("/dev/zero")
    with pytest.raises(CheckpointError, match=f"{name} is a character device, not a regular file"):
        rustml_nb.from_pretrained(copy)


def test_folders_and_unreadable_files(copy):
    (copy / "config.json").unlink()
    (copy / "config.json").mkdir()
    with pytest.raises(MissingFileError, match="expected config.json at .* found a folder"):
        rustml_nb.from_pretrained(copy)
    (copy / "config.json").rmdir()
    (copy / "config.json").symlink_to("/proc/self/mem")  # a regular file that fails on read (EIO), even for root
    with pytest.raises(UnreadableFileError, match="cannot read config.json"):
        rustml_nb.from_pretrained(copy)


def test_config_json_too_large_or_too_deep(copy):
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "padding": "x" * (1 << 20)}))
    with pytest.raises(ConfigError, match="config.json is larger than 1,048,576 bytes"):
        rustml_nb.from_pretrained(copy)
    (copy / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="JSON nested too deeply"):
        rustml_nb.from_pretrained(copy)
    (copy / "config.json").write_text(json.dumps(config)[:-1] + ', "d_model": 16}')
    with pytest.raises(ConfigError, match="the key 'd_model' appears twice"):
        rustml_nb.from_pretrained(copy)


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "../../../../etc/passwd",
                                   "sub/model.safetensors", "..", "", "model.bin", "a\\b.safetensors"])
def test_a_shard_index_cannot_leave_the_folder(copy, shard):
    """Refused before any file is opened: none of these exists, and the error is not 'missing'."""
    tensors = load_safetensors(copy / "model.safetensors")
    index = {"metadata": {}, "weight_map": {name: "model.safetensors" for name in tensors}}
    index["weight_map"][next(iter(tensors))] = shard
    (copy / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="not a .safetensors file name inside the checkpoint folder"):
        rustml_nb.from_pretrained(copy)


def test_header_checks(tmp_path):
    path = tmp_path / "x.safetensors"
    cases = [
        (b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": {"dtype": "F32", "shape": [1], '
         b'"data_offsets": [4, 8]}}', b"\0" * 8, "the key 'w' appears twice"),
        ({"w": {"dtype": "F32", "shape": [1] * 65, "data_offsets": [0, 4]}}, b"\0" * 4, "at most 64"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4, "needs 8 bytes"),
        ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "starts at byte 4"),
        ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 12, "cover 4 bytes of data"),
        ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "non-negative"),
        ({"w": {"dtype": "F32", "shape": [1]}}, b"\0" * 4, "expected dtype, shape and data_offsets"),
        ([1, 2], b"", "header is not a JSON object"),
    ]
    for header, data, message in cases:
        path.write_bytes(safetensors_bytes(header if not isinstance(header, list) else json.dumps(header).encode(),
                                           data))
        with pytest.raises(CheckpointError, match=message):
            load_safetensors(path)
    path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(CheckpointError, match="its header claims"):
        load_safetensors(path)


def test_tensors_are_views_until_the_model_copies_them(checkpoint):
    tensors = load_safetensors(checkpoint / "model.safetensors")
    assert all(not array.flags.writeable and not array.flags.owndata for array in tensors.values())
    model = rustml_nb.from_pretrained(checkpoint)
    for field in model.weights.encoder:
        assert field.flags.owndata or field.base is not None and field.base.flags.owndata


def peak_rss_growth_mib(code: str) -> tuple[float, str]:
    result = run_with_timeout(textwrap.dedent("""
        def peak():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        import numpy as np, rustml_nb, rustml_nb.models.patchtst  # the code loading needs, in the baseline
        before = peak()
    """) + textwrap.dedent(code) + "\nprint('GROWTH', peak() - before)\n", timeout=600)
    assert "GROWTH" in result.stdout, result.stderr[-3000:]
    return float(result.stdout.split("GROWTH")[-1]), result.stdout


def test_a_huge_sparse_tensor_is_refused_without_reading_it(copy):
    """A 4 GiB tensor the config has no use for, and another under a real name with a wrong shape: the
    header is enough to refuse both; nothing is read (the file is sparse: reading it would fill memory)."""
    tensors = {name: np.array(array) for name, array in load_safetensors(copy / "model.safetensors").items()}
    for junk in ("junk", "model.encoder.positional_encoder.position_enc"):
        header, data, offset = {}, [], 0
        for name, array in tensors.items():
            if name == junk:
                continue
            tag = {"float32": "F32", "int64": "I64"}[array.dtype.name]
            header[name] = {"dtype": tag, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
            data.append(array.tobytes())
            offset += array.nbytes
        header[junk] = {"dtype": "F32", "shape": [1 << 30], "data_offsets": [offset, offset + (4 << 30)]}
        encoded = json.dumps(header).encode()
        with open(copy / "model.safetensors", "wb") as file:
            file.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(data))
            file.truncate(8 + len(encoded) + offset + (4 << 30))  # a hole: no disk, no memory until read
        growth, output = peak_rss_growth_mib(f"""
            try:
                rustml_nb.from_pretrained({str(copy)!r})
            except (rustml_nb.WeightMappingError, rustml_nb.ShapeMismatchError, rustml_nb.ArchitectureMismatchError) as e:
                print("REFUSED", type(e).__name__)
        """)
        assert "REFUSED" in output and growth < 64, f"{junk}: {growth:.0f} MiB more at peak; {output}"


def test_non_finite_weights_are_refused_naming_the_key(copy):
    """NaN in k_proj.bias (which attention drops, as softmax cancels it) gave clean-looking forecasts."""
    from safetensors.numpy import save_file
    tensors = {name: np.array(array) for name, array in load_safetensors(copy / "model.safetensors").items()}
    key = "model.encoder.layers.0.self_attn.k_proj.bias"
    tensors[key][[1, 3]] = [np.nan, np.inf]
    save_file(tensors, copy / "model.safetensors")
    with pytest.raises(CheckpointError, match=rf"'{key}' holds 2 non-finite value\(s\) \(NaN or inf\) among 8"):
        rustml_nb.from_pretrained(copy)


def test_shape_mismatch_names_the_checkpoint_key(copy):
    from safetensors.numpy import save_file
    tensors = {name: np.array(array) for name, array in load_safetensors(copy / "model.safetensors").items()}
    key = "model.encoder.layers.0.ff.0.bias"
    tensors[key] = tensors[key][:5]
    save_file(tensors, copy / "model.safetensors")
    with pytest.raises(ShapeMismatchError, match=rf"'{key}' \(rustml_nb 'encoder_layers.0.ff.linear1.bias'\)"):
        rustml_nb.from_pretrained(copy)


@pytest.mark.parametrize("name", ["head.projection.weight", "model.encoder.layers.0.ff.0.weight"])
@pytest.mark.parametrize("shape", [(), (5,)])
def test_weights_of_the_wrong_rank(copy, name, shape):
    from safetensors.numpy import save_file
    tensors = {key: np.array(array) for key, array in load_safetensors(copy / "model.safetensors").items()}
    tensors[name] = np.zeros(shape, np.float32)
    save_file(tensors, copy / "model.safetensors")
    with pytest.raises(RustmlError):
        rustml_nb.from_pretrained(copy)


@pytest.mark.parametrize("model_id", ["", "~nouser-xyz/x", "a" * 300, "x" * 100 + "/" + "y" * 300, "/", ".", 5,
                                      None, b"\0"])
def test_model_names_that_are_neither_folders_nor_repo_ids(model_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "." is then an empty folder
    with pytest.raises(MissingFileError):
        rustml_nb.from_pretrained(model_id)


# --------------------------------------------------------------------------------------------------
# Fuzzing: whatever the header or the config says, a failure is a RustmlError
# --------------------------------------------------------------------------------------------------
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                      max_size=4), max_leaves=12)
TENSOR_SPECS = st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "F8_E4M3", "X", 3]),
                                      "shape": st.lists(st.integers(-1, 5), max_size=3) | JSON_VALUES,
                                      "data_offsets": st.lists(st.integers(-2, 40), min_size=0, max_size=3)
                                      | JSON_VALUES})


@given(header=st.dictionaries(st.text(min_size=1, max_size=12), TENSOR_SPECS | JSON_VALUES, max_size=4),
       data=st.binary(max_size=48))
def test_fuzzed_safetensors_headers_raise_only_typed_errors(header, data, tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "x.safetensors"
    path.write_bytes(safetensors_bytes(header, data))
    try:
        loaded = load_safetensors(path)
    except RustmlError:
        return
    for array in loaded.values():
        np.asarray(array).sum()  # every view is readable


FIELDS = [field for field in rustml_nb.PatchTSTConfig.__dataclass_fields__]


@given(values=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=4))
def test_fuzzed_config_values_raise_only_typed_errors(values, tmp_path_factory, checkpoint):
    folder = tmp_path_factory.mktemp("config")
    config = json.loads((checkpoint / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **values}))
    os.symlink(checkpoint / "model.safetensors", folder / "model.safetensors")
    try:
        model = rustml_nb.from_pretrained(folder)
    except RustmlError:
        return
    model(np.zeros((1, model.config.context_length, model.config.num_input_channels), np.float32))
