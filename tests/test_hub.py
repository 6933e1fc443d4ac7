"""HubApi against a Hub stand-in on 127.0.0.1: real HTTP, real huggingface_hub cache, no mocks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

import rustml_nb
from rustml_nb.hub import (HubApi, HubConnectionError, HubFileNotFoundError, NotCachedError, RepoNotFoundError,
                           RevisionNotFoundError)
from hub_server import HubStandIn
from reference import build_reference, realistic_series, run_reference

SMALL = dict(num_input_channels=2, context_length=12, patch_length=4, patch_stride=4, d_model=8,
             num_attention_heads=2, ffn_dim=8, num_hidden_layers=1, prediction_length=3)


@pytest.fixture()
def hub():
    server = HubStandIn().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two versions of one model (different weights), and a sharded one."""
    made = {}
    for name, seed, shard in (("v1", 1, None), ("v2", 2, None), ("sharded", 3, "2KB")):
        folder = tmp_path_factory.mktemp(name)
        model = build_reference("PatchTSTForPrediction", seed=seed, torch_dtype=torch.float64, **SMALL)
        model.save_pretrained(folder, **({"max_shard_size": shard} if shard else {}))
        made[name] = (model, folder)
    return made


def api(hub, tmp_path, **kwargs):
    return HubApi(cache_dir=tmp_path / "cache", endpoint=hub.url, progress=False, **kwargs)


def assert_runs_like(bundle, reference):
    model = rustml_nb.PatchTSTForPrediction.from_hub_weights(bundle.config, bundle.load_tensors(), "float64")
    values = realistic_series(np.random.default_rng(0), 2, 12, 2)
    np.testing.assert_allclose(model(values).prediction_outputs,
                               run_reference(reference, values).prediction_outputs.numpy(), rtol=1e-9, atol=1e-9)


def test_first_download_fetches_only_what_the_model_needs_then_the_cache_serves(hub, tmp_path, checkpoints):
    reference, folder = checkpoints["v1"]
    hub.add_commit("org/model", folder, extra_files={"README.md": b"# model", "pytorch_model.bin": b"x" * 1000})
    bundle = api(hub, tmp_path).download_model("org/model")
    assert sorted(p.name for p in bundle.root.iterdir()) == ["config.json", "model.safetensors"]
    assert str(bundle.root).startswith(str(tmp_path / "cache" / "models--org--model" / "snapshots"))
    fetched = {path.rsplit("/", 1)[1] for method, path in hub.requests if method == "GET" and "/resolve/" in path}
    assert fetched == {"config.json", "model.safetensors"}
    assert_runs_like(bundle, reference)

    before = len(hub.requests)
    again = api(hub, tmp_path).download_model("org/model")
    assert len(hub.requests) == before, hub.requests[before:]
    assert again.root == bundle.root


def test_revision_pinning(hub, tmp_path, checkpoints):
    first = hub.add_commit("org/model", checkpoints["v1"][1], branches=("main", "v1.0"))
    hub.add_commit("org/model", checkpoints["v2"][1], branches=("main",))
    client = api(hub, tmp_path)
    assert_runs_like(client.download_model("org/model"), checkpoints["v2"][0])
    assert_runs_like(client.download_model("org/model", revision="v1.0"), checkpoints["v1"][0])
    pinned = client.download_model("org/model", revision=first)
    assert pinned.root.name == first
    assert_runs_like(pinned, checkpoints["v1"][0])


def test_sharded_checkpoint(hub, tmp_path, checkpoints):
    reference, folder = checkpoints["sharded"]
    hub.add_commit("org/sharded", folder)
    bundle = api(hub, tmp_path).download_model("org/sharded")
    assert len(list(bundle.root.glob("model-*.safetensors"))) > 1
    assert_runs_like(bundle, reference)


def test_offline_after_the_server_is_gone(hub, tmp_path, checkpoints, monkeypatch):
    reference, folder = checkpoints["v1"]
    hub.add_commit("org/model", folder)
    api(hub, tmp_path).download_model("org/model")
    url = hub.url
    hub.stop()
    offline = HubApi(cache_dir=tmp_path / "cache", endpoint=url, progress=False)
    assert_runs_like(offline.download_model("org/model", local_files_only=True), reference)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_runs_like(offline.download_model("org/model"), reference)
    with pytest.raises(NotCachedError, match=r"org/other@main is not complete in the cache"):
        offline.download_model("org/other")
    model = rustml_nb.from_pretrained("org/model", cache_dir=tmp_path / "cache", dtype="float64")
    assert isinstance(model, rustml_nb.PatchTSTForPrediction)


def test_cache_is_shared_with_transformers(hub, tmp_path, checkpoints):
    reference, folder = checkpoints["v1"]
    hub.add_commit("org/model", folder)
    api(hub, tmp_path).download_model("org/model")
    theirs = transformers.PatchTSTForPrediction.from_pretrained("org/model", cache_dir=tmp_path / "cache",
                                                                local_files_only=True, dtype=torch.float64)
    values = realistic_series(np.random.default_rng(0), 2, 12, 2)
    np.testing.assert_array_equal(run_reference(theirs, values).prediction_outputs.numpy(),
                                  run_reference(reference, values).prediction_outputs.numpy())


def test_a_model_transformers_downloaded_is_served_from_the_cache(hub, tmp_path, checkpoints):
    """transformers fetches through the stand-in (in its own process: HF_ENDPOINT is read at import);
    then we load the same repo with the network off."""
    reference, folder = checkpoints["v1"]
    hub.add_commit("org/model", folder)
    cache = tmp_path / "cache"
    code = ("import transformers; transformers.PatchTSTForPrediction.from_pretrained("
            f"'org/model', cache_dir={str(cache)!r})")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300,
                   env={**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
    before = len(hub.requests)
    assert before > 0  # transformers really went over HTTP
    bundle = HubApi(cache_dir=cache, endpoint=hub.url, progress=False).download_model("org/model",
                                                                                      local_files_only=True)
    assert len(hub.requests) == before
    assert_runs_like(bundle, reference)


def test_from_pretrained_takes_a_repo_id_through_hf_endpoint(hub, tmp_path, checkpoints, monkeypatch):
    hub.add_commit("org/model", checkpoints["v1"][1])
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    model = rustml_nb.from_pretrained("org/model", cache_dir=tmp_path / "cache")
    assert isinstance(model, rustml_nb.PatchTSTForPrediction)
    with pytest.raises(rustml_nb.MissingFileError, match="neither an existing folder nor a valid Hub repo id"):
        rustml_nb.from_pretrained("not a/valid/repo id", cache_dir=tmp_path / "cache")
    with pytest.raises(rustml_nb.MissingFileError, match="not a checkpoint folder"):
        rustml_nb.from_pretrained(str(tmp_path / "nowhere"))


def test_missing_repo_revision_and_files(hub, tmp_path, checkpoints):
    client = api(hub, tmp_path)
    with pytest.raises(RepoNotFoundError, match="org/absent@main"):
        client.download_model("org/absent")
    hub.add_commit("org/model", checkpoints["v1"][1])
    with pytest.raises(RevisionNotFoundError, match="org/model@nope"):
        client.download_model("org/model", revision="nope")
    (tmp_path / "only-config").mkdir()
    (tmp_path / "only-config" / "config.json").write_bytes((checkpoints["v1"][1] / "config.json").read_bytes())
    hub.add_commit("org/no-weights", tmp_path / "only-config")
    with pytest.raises(HubFileNotFoundError, match="org/no-weights@main: no model.safetensors"):
        client.download_model("org/no-weights")
    hub.add_commit("org/pickle", tmp_path / "only-config", extra_files={"pytorch_model.bin": b"never unpickled"})
    with pytest.raises(HubFileNotFoundError, match="only PyTorch pickle weights.*safe_serialization=True"):
        client.download_model("org/pickle")
    assert not any("pytorch_model.bin" in path for _, path in hub.requests)


def test_shard_index_naming_a_shard_the_repo_lacks(hub, tmp_path, checkpoints):
    folder = tmp_path / "partial"
    folder.mkdir()
    shards = sorted(checkpoints["sharded"][1].glob("model-*.safetensors"))
    for path in [checkpoints["sharded"][1] / "config.json", checkpoints["sharded"][1] / "model.safetensors.index.json",
                 *shards[:-1]]:
        (folder / path.name).write_bytes(path.read_bytes())
    hub.add_commit("org/partial", folder)
    with pytest.raises(HubFileNotFoundError, match=f"org/partial@main: .*shards the repo lacks.*{shards[-1].name}"):
        api(hub, tmp_path).download_model("org/partial")


def test_server_error_and_connection_refused(hub, tmp_path, checkpoints):
    hub.add_commit("org/model", checkpoints["v1"][1])
    hub.faults["model.safetensors"] = "500"
    with pytest.raises(HubConnectionError, match=r"org/model@main, model.safetensors: the server answered HTTP 500"):
        api(hub, tmp_path).download_model("org/model")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    refused = HubApi(cache_dir=tmp_path / "other", endpoint=closed, progress=False)
    with pytest.raises(HubConnectionError, match=r"org/model@main, \(repo listing\)"):
        refused.download_model("org/model")


def test_a_download_cut_halfway_leaves_nothing_that_loads(hub, tmp_path, checkpoints):
    reference, folder = checkpoints["v1"]
    hub.add_commit("org/model", folder)
    hub.faults["model.safetensors"] = "cut"
    client = api(hub, tmp_path)
    with pytest.raises(HubConnectionError, match=r"org/model@main, model.safetensors: download failed"):
        client.download_model("org/model")
    assert client.cached_snapshot("org/model", "main") is None
    with pytest.raises(NotCachedError):
        client.download_model("org/model", local_files_only=True)
    assert not [p for p in (tmp_path / "cache").rglob("model.safetensors")]
    del hub.faults["model.safetensors"]
    assert_runs_like(client.download_model("org/model"), reference)


def test_progress_bar_shows_only_when_asked_or_on_a_terminal(hub, tmp_path, checkpoints, capfd):
    hub.add_commit("org/model", checkpoints["v1"][1])
    HubApi(cache_dir=tmp_path / "quiet", endpoint=hub.url, progress=False).download_model("org/model")
    assert "model.safetensors" not in capfd.readouterr().err
    HubApi(cache_dir=tmp_path / "default", endpoint=hub.url).download_model("org/model")  # stderr is no terminal here
    assert "model.safetensors" not in capfd.readouterr().err
    HubApi(cache_dir=tmp_path / "loud", endpoint=hub.url, progress=True).download_model("org/model")
    assert "model.safetensors" in capfd.readouterr().err


def test_private_repo_needs_its_token(hub, tmp_path, checkpoints, monkeypatch):
    reference, folder = checkpoints["v1"]
    hub.add_commit("org/private", folder)
    hub.private["org/private"] = "hf_secret"
    with pytest.raises(RepoNotFoundError, match="org/private@main"):
        HubApi(cache_dir=tmp_path / "a", endpoint=hub.url, progress=False).download_model("org/private")
    assert_runs_like(HubApi(cache_dir=tmp_path / "b", endpoint=hub.url, token="hf_secret", progress=False)
                     .download_model("org/private"), reference)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")  # huggingface_hub's own environment variable
    assert_runs_like(HubApi(cache_dir=tmp_path / "c", endpoint=hub.url, progress=False)
                     .download_model("org/private"), reference)
