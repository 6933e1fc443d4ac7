"""ONNX as a source format: transformers PatchTST models exported by every route users take, loaded with
rustml_nb (weights named from the graph, never run), against the same model's safetensors checkpoint."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings, strategies as st

import rustml_nb
from rustml_nb.errors import CheckpointError, MissingFileError, RustmlWarning, UnsupportedArchitectureError
from rustml_nb.formats import load_safetensors
from rustml_nb.formats.onnx import OnnxGraph
from onnx_exports import MAIN_OUTPUT, ROUTES, export
from reference import CLASS_NAMES, build_reference, run_reference
from strategies import patchtst_kwargs

onnx = pytest.importorskip("onnx")
# Each example exports a model (about a second): few examples per route, and no shrinking, which would export
# hundreds more; a failure is reported as drawn. HYPOTHESIS_PROFILE=long draws more.
EXAMPLES = settings(deadline=None, suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate],
                    max_examples=40 if os.environ.get("HYPOTHESIS_PROFILE") == "long" else 6)
NOT_TENSORS = ("num_batches_tracked",)
OUTPUT_FIELDS = {"prediction_outputs", "prediction_output", "prediction_logits", "regression_outputs",
                 "last_hidden_state", "loc", "scale", "patch_input", "mask"}


def exported(reference, route, folder, with_config: bool):
    """The reference exported by ``route`` into ``folder``, its config.json beside it or not; None when the
    exporter or onnxruntime itself refuses the model (see onnx_exports)."""
    folder.mkdir()
    try:
        path = export(reference, route, folder / "model.onnx")
    except Exception as error:  # noqa: BLE001 - torch's exporters and onnxruntime, not rustml_nb
        if "onnxruntime" in type(error).__module__.lower() or "ONNXRuntimeError" in str(error) \
                or "INTERNAL ASSERT FAILED" in str(error):
            return None
        raise
    if with_config:  # as save_pretrained writes it
        reference.config.architectures = [type(reference).__name__]
        reference.config.to_json_file(folder / "config.json")
    return path


def load(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RustmlWarning)  # the TorchScript exporter's warning: tested below
        return rustml_nb.from_pretrained(path, **kwargs)


def bundle_of(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RustmlWarning)
        return rustml_nb.bundle.load_bundle(path)


def output_arrays(output) -> dict[str, np.ndarray]:
    return {name: value for name, value in vars(output).items()
            if name in OUTPUT_FIELDS and isinstance(value, np.ndarray)}


def draw_series(data, config):
    rng = np.random.default_rng(data.draw(st.integers(0, 100), label="series seed"))
    return rng.normal(size=(2, config.context_length, config.num_input_channels)) * 5 + 3


def draw_export(data, route, tmp_path_factory, with_config: bool):
    """A drawn class and config, its random reference saved as safetensors (root / "safetensors") and exported
    by ``route`` (skipped when torch's exporter or onnxruntime refuses it)."""
    class_name = data.draw(st.sampled_from(CLASS_NAMES), label="class")
    kwargs = data.draw(patchtst_kwargs(class_name), label="config")
    reference = build_reference(class_name, seed=data.draw(st.integers(0, 100), label="seed"), **kwargs)
    root = tmp_path_factory.mktemp("onnx")
    reference.save_pretrained(root / "safetensors")
    path = exported(reference, route, root / "export", with_config=with_config)
    assume(path is not None)
    return class_name, kwargs, root, path


@pytest.mark.parametrize("route", ROUTES)
@EXAMPLES
@given(data=st.data())
def test_every_export_loads_bit_exact_beside_its_config(route, data, tmp_path_factory):
    """With config.json beside the file: the weights are the checkpoint's bit for bit (what the graph holds of
    them), and every output field equals the safetensors model's, in float32 and float64."""
    class_name, kwargs, root, path = draw_export(data, route, tmp_path_factory, with_config=True)
    dtype = data.draw(st.sampled_from(["float32", "float64"]), label="dtype")
    ours, theirs = load(path, dtype=dtype), rustml_nb.from_pretrained(root / "safetensors", dtype=dtype)
    assert type(ours) is type(theirs)

    # Compared under our names: a bare PatchTSTModel's keys have no "model." prefix, the export's wrapper one.
    checkpoint = rustml_nb.map_patchtst_weights(rustml_nb.bundle.load_bundle(root / "safetensors").load_tensors())
    bundle = bundle_of(path)
    tensors = rustml_nb.map_patchtst_weights(bundle.load_tensors())
    named_by = {ours: bundle.onnx.named_by[key] for ours, key in tensors.sources.items()}
    for name, array in checkpoint.mapped.items():
        if name.endswith(NOT_TENSORS) or named_by.get(name, "").startswith("folded"):
            continue  # a training counter; cls_token + position_enc[0], added together by the exporter
        assert name in tensors.mapped, f"{route}: {name} not recovered"
        np.testing.assert_array_equal(tensors.mapped[name], array, err_msg=f"{route}: {name} ({named_by[name]})")

    values = draw_series(data, ours.config)
    mine, expected = output_arrays(ours(values)), output_arrays(theirs(values))
    assert mine.keys() == expected.keys()
    folded = any(how.startswith("folded") for how in named_by.values())
    for name in expected:
        if folded and dtype == "float64":  # the file holds cls_token + position_enc[0] rounded to float32
            np.testing.assert_allclose(mine[name], expected[name], rtol=1e-5, atol=1e-5, err_msg=f"{route}: {name}")
        else:
            np.testing.assert_array_equal(mine[name], expected[name], err_msg=f"{route}: {name}")


def config_needed(route, class_name, kwargs) -> bool:
    """Where a file without config.json cannot be read, by design (the loader says so): a point regression
    head's output range (constants with no name; transformers applies it to point heads only), and a
    distribution head in a graph without names (which distribution it is, the graph does not say)."""
    distribution = kwargs["loss"] == "nll" and class_name in ("PatchTSTForPrediction", "PatchTSTForRegression")
    return (class_name == "PatchTSTForRegression" and kwargs["output_range"] is not None and not distribution) \
        or (distribution and route in ("ort", "stripped"))


@pytest.mark.parametrize("route", ROUTES)
@EXAMPLES
@given(data=st.data())
def test_the_config_is_recovered_from_the_graph(route, data, tmp_path_factory):
    """Without config.json: the config is read off the graph and the model computes exactly what the
    safetensors one does (classification and an output-range-free regression head compute the same; a
    graph without names or metadata is loaded as the former)."""
    class_name, kwargs, root, path = draw_export(data, route, tmp_path_factory, with_config=False)
    if config_needed(route, class_name, kwargs):
        with pytest.raises(CheckpointError, match="config.json"):
            load(path)
        return
    ours, theirs = load(path), rustml_nb.from_pretrained(root / "safetensors")
    for field in ("context_length", "num_input_channels", "patch_length", "d_model", "num_hidden_layers",
                  "use_cls_token", "share_embedding"):
        assert getattr(ours.config, field) == getattr(theirs.config, field), field
    assert ours.config.num_patches == theirs.config.num_patches
    values = draw_series(data, ours.config)
    mine, expected = ours(values), theirs(values)
    main = MAIN_OUTPUT[class_name]
    mine_main = getattr(mine, MAIN_OUTPUT[type(ours).__name__])
    np.testing.assert_array_equal(mine_main, getattr(expected, main))


def test_an_export_matches_transformers_within_the_parity_bounds(tmp_path):
    """The ONNX route end to end against transformers itself (the float64 parity bound of test_parity)."""
    kwargs = dict(num_input_channels=3, context_length=32, patch_length=8, patch_stride=4, d_model=16,
                  num_attention_heads=4, ffn_dim=32, num_hidden_layers=2, prediction_length=6)
    reference = build_reference("PatchTSTForPrediction", seed=3, **kwargs)
    path = exported(reference, "dynamo", tmp_path / "export", with_config=False)
    model = load(path, dtype="float64")
    values = np.random.default_rng(1).normal(size=(4, 32, 3))
    expected = run_reference(reference.double(), values, None, None).prediction_outputs
    np.testing.assert_allclose(model(values).prediction_outputs, expected, rtol=1e-9, atol=1e-9)


SMALL = dict(num_input_channels=2, context_length=16, patch_length=4, patch_stride=4, d_model=8,
             num_attention_heads=2, ffn_dim=8, num_hidden_layers=1, prediction_length=3)


def small_reference(class_name="PatchTSTForPrediction", **changes):
    return build_reference(class_name, seed=0, **{**SMALL, **changes})


def test_the_torchscript_exporter_is_warned_about(tmp_path):
    reference = small_reference()
    legacy = exported(reference, "legacy", tmp_path / "legacy", with_config=True)
    with pytest.warns(RustmlWarning, match="TorchScript exporter.*swaps two axes"):
        rustml_nb.from_pretrained(legacy)
    dynamo = exported(reference, "dynamo", tmp_path / "dynamo", with_config=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RustmlWarning)
        rustml_nb.from_pretrained(dynamo)


@pytest.mark.parametrize("route", ["dynamo", "legacy", "ort", "ort_bias_gelu", "stripped"])
def test_initializers_merged_by_the_exporter_are_named_per_use(route, tmp_path):
    """transformers' own initialisation (zero biases and BatchNorm means, unit norm weights and variances):
    exporters keep one initializer for all equal tensors, under one of their names. Each use gets its own
    name, and every tensor comes back equal to the checkpoint's."""
    import transformers

    config = transformers.PatchTSTConfig(**{**SMALL, "num_hidden_layers": 2})
    reference = transformers.PatchTSTForPrediction(config).eval()
    reference.save_pretrained(tmp_path / "safetensors")
    path = exported(reference, route, tmp_path / "export", with_config=True)
    graph = OnnxGraph(path)

    def uses(value):  # nodes reading an initializer, directly or through the Identity nodes the exporter adds
        return sum(uses(node.output[0]) if node.op_type == "Identity" else 1 for node, _ in graph.consumers.get(value, []))

    assert max(uses(name) for name in graph.initializers) >= 4  # e.g. every zero bias is one initializer
    if route == "ort_bias_gelu":  # the first feed-forward Linear's bias is an input of onnxruntime's BiasGelu
        assert any(node.op_type == "BiasGelu" for node in graph.graph.node)
    mine = rustml_nb.map_patchtst_weights(bundle_of(path).load_tensors())
    checkpoint = rustml_nb.map_patchtst_weights(load_safetensors(tmp_path / "safetensors" / "model.safetensors"))
    for name, array in checkpoint.mapped.items():
        if not name.endswith(NOT_TENSORS):
            np.testing.assert_array_equal(mine.mapped[name], array, err_msg=name)


@pytest.mark.parametrize("dynamo", [True, False])
def test_a_dynamic_batch_dimension_loads_without_config(dynamo, tmp_path):
    """The usual export for serving: any batch size. Channels and context stay static, so the config is still
    read off the graph."""
    import torch

    reference = small_reference(num_hidden_layers=2, patch_stride=3, context_length=20)
    module = torch.nn.Module()
    module.model = reference
    module.forward = lambda past_values: reference(past_values=past_values).prediction_outputs
    example, path = torch.randn(2, 20, 2), tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(module, (example,), str(path), dynamo=True, input_names=["past_values"],
                              dynamic_shapes={"past_values": {0: torch.export.Dim("batch")}})
        else:
            torch.onnx.export(module, (example,), str(path), dynamo=False, input_names=["past_values"],
                              dynamic_axes={"past_values": {0: "batch"}})
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic, not 2
    reference.save_pretrained(tmp_path / "safetensors")
    values = np.random.default_rng(0).normal(size=(5, 20, 2))
    np.testing.assert_array_equal(load(path)(values).prediction_outputs,
                                  rustml_nb.from_pretrained(tmp_path / "safetensors")(values).prediction_outputs)


def test_a_folder_holding_model_onnx_loads_like_the_file(tmp_path):
    reference = small_reference("PatchTSTForClassification", num_targets=3)
    path = exported(reference, "dynamo", tmp_path / "export", with_config=True)
    values = np.random.default_rng(0).normal(size=(2, 16, 2))
    by_folder, by_file = rustml_nb.from_pretrained(path.parent), rustml_nb.from_pretrained(path)
    np.testing.assert_array_equal(by_folder(values).prediction_logits, by_file(values).prediction_logits)


def test_inspect_says_where_the_config_and_names_came_from(tmp_path):
    reference = small_reference(use_cls_token=True)
    stripped = exported(reference, "ort", tmp_path / "ort", with_config=False)
    result = subprocess.run([sys.executable, "-m", "rustml_nb", "inspect", str(stripped)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "config recovered from the graph (" in result.stdout and "patch_stride" in result.stdout
    assert "named by the structure" in result.stdout
    assert "folded by the exporter (cls_token + position_enc[0] into one)" in result.stdout
    dynamo = exported(reference, "dynamo", tmp_path / "dynamo", with_config=True)
    result = subprocess.run([sys.executable, "-m", "rustml_nb", "inspect", str(dynamo)], capture_output=True,
                            text=True, timeout=300)
    assert "config from config.json beside the file" in result.stdout and "named by the graph" in result.stdout


def test_the_command_line_forecasts_and_checks_parity_from_an_onnx_file(tmp_path, capsys):
    """`rustml-nb forecast` and `rustml-nb parity` on an export of the bundled model (no config.json): the
    forecast is the checkpoint's; parity builds transformers' model from the weights read out of the file."""
    import transformers

    from rustml_nb import demo
    from rustml_nb.cli import main

    reference = transformers.PatchTSTForPrediction.from_pretrained(demo.MODEL_PATH).eval()
    path = exported(reference, "dynamo", tmp_path / "export", with_config=False)
    history, _ = demo.test_slice()
    history.to_csv(tmp_path / "history.csv")
    for model, output in ((path, "from_onnx.csv"), (demo.MODEL_PATH, "from_checkpoint.csv")):
        assert main(["forecast", str(model), "--input", str(tmp_path / "history.csv"),
                     "--output", str(tmp_path / output)]) == 0
    assert (tmp_path / "from_onnx.csv").read_text() == (tmp_path / "from_checkpoint.csv").read_text()
    capsys.readouterr()
    assert main(["parity", str(path), "--dtype", "float64"]) == 0
    assert "all within tolerance" in capsys.readouterr().out


def test_a_hub_repo_holding_an_onnx_export_downloads_what_it_needs_then_the_cache_serves(tmp_path):
    """A repo with model.onnx, the file its weights live in and (or not) config.json, from a Hub stand-in on
    127.0.0.1: only those files are fetched, a second load makes no request, and a repo whose graph names a
    weights file it lacks is refused by name."""
    from hub_server import HubStandIn

    from rustml_nb.hub import HubApi, HubFileNotFoundError

    reference = small_reference(d_model=64, ffn_dim=128)  # big enough for weights outside the graph file
    reference.save_pretrained(tmp_path / "safetensors")
    path = exported(reference, "dynamo", tmp_path / "export", with_config=True)
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("model.onnx", "model.onnx.data"):
        shutil.copy(path.parent / name, bare / name)
    values = np.random.default_rng(0).normal(size=(2, 16, 2))
    expected = rustml_nb.from_pretrained(tmp_path / "safetensors")(values).prediction_outputs
    server = HubStandIn().start()
    try:
        server.add_commit("org/onnx", path.parent, extra_files={"README.md": b"# exported"})
        server.add_commit("org/onnx-bare", bare)
        for repo, files in (("org/onnx", {"config.json", "model.onnx", "model.onnx.data"}),
                            ("org/onnx-bare", {"model.onnx", "model.onnx.data"})):
            hub = HubApi(cache_dir=tmp_path / "cache", endpoint=server.url, progress=False)
            bundle = hub.download_model(repo)
            fetched = {p.rsplit("/", 1)[1] for method, p in server.requests if method == "GET" and f"{repo}/resolve/" in p}
            assert fetched == files and bundle.onnx is not None
            model = rustml_nb.registry.model_class_for(bundle.config, bundle.load_tensors())
            ours = model.from_hub_weights(bundle.config, bundle.load_tensors(), "float32")
            np.testing.assert_array_equal(ours(values).prediction_outputs, expected)
            before = len(server.requests)
            assert hub.download_model(repo).root == bundle.root and len(server.requests) == before
        (bare / "model.onnx.data").unlink()
        server.add_commit("org/onnx-broken", bare)
        with pytest.raises(HubFileNotFoundError, match="keeps weights in files the repo lacks.*model.onnx.data"):
            HubApi(cache_dir=tmp_path / "cache", endpoint=server.url, progress=False).download_model("org/onnx-broken")
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------------
# Files that are not what they should be
# --------------------------------------------------------------------------------------------------
def tiny_graph(path):
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
                              "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])], [weight])
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_a_graph_that_is_not_patchtst_is_refused_by_what_it_holds(tmp_path):
    with pytest.raises(UnsupportedArchitectureError, match="does not look like.*MatMul, Relu"):
        rustml_nb.from_pretrained(tiny_graph(tmp_path / "mlp.onnx"))


def test_a_file_that_is_not_onnx_is_refused(tmp_path):
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"\x00\xffnot a protobuf" * 10)
    with pytest.raises(CheckpointError, match="is not an ONNX model"):
        rustml_nb.from_pretrained(junk)


def test_a_fifo_in_place_of_the_graph_or_its_data_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "pipe.onnx")
    with pytest.raises(CheckpointError, match="pipe.onnx is a FIFO, not a regular file"):
        rustml_nb.from_pretrained(tmp_path / "pipe.onnx")
    path = exported(small_reference(d_model=64, ffn_dim=128), "dynamo", tmp_path / "export", with_config=True)
    data = path.with_name(path.name + ".data")
    data.unlink()
    os.mkfifo(data)
    with pytest.raises(CheckpointError, match="model.onnx.data is a FIFO, not a regular file"):
        rustml_nb.from_pretrained(path)


def test_missing_truncated_and_escaping_external_data_are_refused(tmp_path):
    reference = small_reference(num_input_channels=1, d_model=64, ffn_dim=128)  # big enough to go external
    path = exported(reference, "dynamo", tmp_path / "export", with_config=True)
    data = path.with_name(path.name + ".data")
    # torch.onnx.export(dynamo=True) writes weights beside the graph by default (all but the smallest)
    assert data.stat().st_size > 0
    np.testing.assert_array_equal(rustml_nb.from_pretrained(path)(np.ones((1, 16, 1))).prediction_outputs,
                                  rustml_nb.from_pretrained(path.parent)(np.ones((1, 16, 1))).prediction_outputs)
    whole = data.read_bytes()
    data.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match=r"needs \d+ bytes at \d+ of model.onnx.data, the file holds"):
        rustml_nb.from_pretrained(path)
    data.write_bytes(whole)
    shutil.move(data, tmp_path / "elsewhere.data")
    with pytest.raises(MissingFileError, match="model.onnx.data, which is not beside the model"):
        rustml_nb.from_pretrained(path)
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../elsewhere.data"
    onnx.save(model, str(path))
    with pytest.raises(CheckpointError, match="points outside the model's folder"):
        rustml_nb.from_pretrained(path)


def test_without_the_onnx_package_the_error_names_the_extra(tmp_path):
    path = tiny_graph(tmp_path / "mlp.onnx")
    code = (f"import sys; sys.modules['onnx'] = None\nimport rustml_nb\ntry:\n    rustml_nb.from_pretrained({str(path)!r})\n"
            "except rustml_nb.MissingFileError as error:\n    print('REFUSED', error)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "REFUSED" in result.stdout and "pip install 'rustml-nb[onnx]'" in result.stdout, result.stderr


# --------------------------------------------------------------------------------------------------
# Hugging Face optimum's exports (fixtures written by scripts/make_optimum_fixtures.py in an environment of
# their own: optimum-onnx pins an older transformers)
# --------------------------------------------------------------------------------------------------
OPTIMUM = sorted((Path(__file__).parent / "fixtures" / "optimum").iterdir())


@pytest.mark.parametrize("fixture", OPTIMUM, ids=[path.name for path in OPTIMUM])
def test_optimum_exports_load_bit_exact_and_at_parity(fixture):
    # optimum exports through the TorchScript exporter, but transformers 4.57's patchify unfolds a positive axis,
    # which that exporter gets right: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", RustmlWarning)
        bundle = rustml_nb.bundle.load_bundle(fixture / "model.onnx")
    mine = rustml_nb.map_patchtst_weights(bundle.load_tensors())
    checkpoint = rustml_nb.map_patchtst_weights(load_safetensors(fixture / "model.safetensors")).mapped
    folded = {ours for ours, key in mine.sources.items() if bundle.onnx.named_by[key].startswith("folded")}
    for name, array in checkpoint.items():
        if not name.endswith(NOT_TENSORS) and name not in folded:
            np.testing.assert_array_equal(mine.mapped[name], array, err_msg=name)

    reference = np.load(fixture / "reference.npz")
    values = reference["past_values"]
    expected = [reference[key] for key in sorted(reference.files) if key.startswith("output_")]
    for dtype in ("float32", "float64"):
        ours = load(fixture / "model.onnx", dtype=dtype)
        theirs = rustml_nb.from_pretrained(fixture, dtype=dtype)  # the folder's safetensors
        field = MAIN_OUTPUT[type(ours).__name__]
        got, same_model = getattr(ours(values), field), getattr(theirs(values), field)
        got = list(got) if isinstance(got, tuple) else [got]
        same_model = list(same_model) if isinstance(same_model, tuple) else [same_model]
        for index, (array, want) in enumerate(zip(got, expected)):
            if dtype == "float32" or not folded:
                np.testing.assert_array_equal(array, same_model[index])
            tolerance = 1e-9 if dtype == "float64" and not folded else 1e-4
            np.testing.assert_allclose(array, want, rtol=tolerance, atol=tolerance, err_msg=f"{dtype} output {index}")
