"""TinyTimeMixer's released revisions: choosing one as granite-tsfm's ``get_model`` does (compared with its
own function), the frequency tokens of its preprocessor, and ``rustml_nb.get_model`` loading the chosen
branch from a Hub stand-in on 127.0.0.1."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import logging
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from hypothesis import given, settings, strategies as st

import rustml_nb
from rustml_nb.errors import ConfigError, RustmlWarning
from rustml_nb.models.tinytimemixer.releases import (FREQUENCY_TOKENS, R3_REPOS, R3_REVISIONS, RELEASES,
                                                      choose_release, frequency_token)
from hub_server import HubStandIn
from test_tinytimemixer import build_reference, granite

ROOT = Path(importlib.util.find_spec("tsfm_public").submodule_search_locations[0])
REPOS = ("ibm-granite/granite-timeseries-ttm-r1", "ibm-granite/granite-timeseries-ttm-r2",
         "ibm-research/ttm-research-r2", "ibm/TTM")
FREQUENCIES = (None, "oov", "min", "5min", "15min", "h", "H", "d", "D", "W", "MS", "nonsense")


def granite_preprocessor_source():
    return ast.parse((ROOT / "toolkit" / "time_series_preprocessor.py").read_text())


def granite_frequency_mapping() -> dict:
    """DEFAULT_FREQUENCY_MAPPING as granite-tsfm's file defines it (its module imports datasets and sklearn)."""
    for node in granite_preprocessor_source().body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "DEFAULT_FREQUENCY_MAPPING":
            return ast.literal_eval(node.value)
    raise AssertionError("DEFAULT_FREQUENCY_MAPPING not found")


def granite_get_model():
    """granite-tsfm's toolkit.get_model, without its toolkit package __init__ (datasets, scikit-learn): the
    preprocessor module it imports one constant from is stood in by that constant, read from its source."""
    granite()
    name = "tsfm_public.toolkit.get_model"
    if name not in sys.modules:
        toolkit = types.ModuleType("tsfm_public.toolkit")
        toolkit.__path__ = [str(ROOT / "toolkit")]
        sys.modules.setdefault("tsfm_public.toolkit", toolkit)
        preprocessor = types.ModuleType("tsfm_public.toolkit.time_series_preprocessor")
        preprocessor.DEFAULT_FREQUENCY_MAPPING = granite_frequency_mapping()
        sys.modules.setdefault("tsfm_public.toolkit.time_series_preprocessor", preprocessor)
    module = importlib.import_module(name)
    module.LOGGER.setLevel(logging.ERROR)
    return module.get_model


def granite_frequency_token(name):
    """TimeSeriesPreprocessor.get_frequency_token, compiled from granite-tsfm's source on its own."""
    for node in ast.walk(granite_preprocessor_source()):
        if isinstance(node, ast.FunctionDef) and node.name == "get_frequency_token":
            namespace = {"pd": pd, "to_offset": pd.tseries.frequencies.to_offset, "logging": logging}
            exec(compile(ast.Module([node], []), "get_frequency_token", "exec"), namespace)
            owner = types.SimpleNamespace(frequency_mapping=granite_frequency_mapping())
            return namespace["get_frequency_token"](owner, name)
    raise AssertionError("get_frequency_token not found")


def test_the_release_table_is_granite_tsfm_s_without_r3():
    table = yaml.safe_load((ROOT / "resources" / "model_paths_config" / "ttm.yaml").read_text())
    theirs = {(group, key): entry for group, entries in table.items() for key, entry in entries.items()
              if not entry["release"].startswith("r3")}
    ours = {("research-use-models" if r.repo_id.startswith("ibm-research") else "ibm-granite-models", r.key):
            dict(release=r.release, model_card=r.repo_id, revision=r.revision, context_length=r.context_length,
                 prediction_length=r.prediction_length) for r in RELEASES}
    assert ours == {key: {k: v for k, v in entry.items() if k in ("release", "model_card", "revision",
                                                                     "context_length", "prediction_length")}
                    for key, entry in theirs.items()}


def test_the_r3_revisions_are_granite_tsfm_s():
    """get_model chooses among ttm.yaml's research r3 entries for either r3 repo; the granite table's are the
    same revisions."""
    table = yaml.safe_load((ROOT / "resources" / "model_paths_config" / "ttm.yaml").read_text())
    for group, repo in (("research-use-models", "ibm-research/ttm-r3"),
                        ("ibm-granite-models", "ibm-granite/granite-timeseries-ttm-r3")):
        theirs = {key: (entry["revision"], entry["context_length"], entry["prediction_length"])
                  for key, entry in table[group].items() if entry["release"] == "r3" and entry["model_card"] == repo}
        assert theirs == {key: (key, context, horizon) for key, context, horizon in R3_REVISIONS}


def test_frequency_tokens_are_granite_tsfm_s():
    assert FREQUENCY_TOKENS == granite_frequency_mapping()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # granite-tsfm logs, rustml_nb warns: an unknown frequency takes "oov"
        for name in ("h", "H", "1h", "60min", "15min", "min", "D", "1D", "W", "W-SUN", "2h", "MS", "3s"):
            assert frequency_token(name) == granite_frequency_token(name), name
    assert frequency_token(pd.tseries.frequencies.to_offset("30min")) == 6
    with pytest.warns(RustmlWarning, match="no TinyTimeMixer frequency token"):
        assert frequency_token("MS") == 0


@settings(max_examples=150, deadline=None)
@given(repo=st.sampled_from(REPOS), context=st.sampled_from([20, 52, 60, 90, 100, 180, 360, 500, 512, 700, 1024,
                                                             1500, 1536, 4000]),
       horizon=st.sampled_from([1, 10, 16, 30, 48, 50, 60, 96, 100, 192, 336, 500, 720, 1000]),
       freq=st.sampled_from(FREQUENCIES), ft=st.booleans(), l1=st.booleans(), longer=st.booleans(),
       force=st.sampled_from([None, "zeropad", "rolling", "random_init_small"]))
def test_choose_release_picks_what_granite_tsfm_s_get_model_picks(repo, context, horizon, freq, ft, l1, longer, force):
    arguments = dict(context_length=context, prediction_length=horizon, freq=freq, freq_prefix_tuning=ft,
                     prefer_l1_loss=l1, prefer_longer_context=longer, force_return=force)
    try:
        theirs = granite_get_model()(repo, return_model_key=True, **arguments)
    except ValueError:
        theirs = None
    except UnboundLocalError:  # granite-tsfm's own slip when nothing is left after its frequency filter
        theirs = None
    if theirs is None or theirs.startswith("TTM("):  # an error, or a randomly initialised TTM to train
        with pytest.raises(ConfigError):
            choose_release(repo, **arguments)
        return
    choice = choose_release(repo, **arguments)
    assert choice.release.key == theirs
    release = choice.release
    assert choice.prediction_filter_length == (horizon if release.prediction_length > horizon else None)


@settings(max_examples=200, deadline=None)
@given(repo=st.sampled_from(R3_REPOS), context=st.sampled_from([20, 52, 60, 90, 100, 156, 180, 360, 500, 512, 700,
                                                                 768, 1024, 1500, 2048, 2600, 4000]),
       horizon=st.sampled_from([1, 10, 16, 30, 48, 50, 60, 96, 100, 336, 500, 720, 1000]),
       freq=st.sampled_from(FREQUENCIES + ("A", "A-DEC")), ft=st.booleans(), l1=st.booleans(), longer=st.booleans(),
       force=st.sampled_from([None, "zeropad", "rolling"]), lite=st.booleans(), known=st.booleans())
def test_choose_release_picks_the_r3_revision_granite_tsfm_s_get_model_picks(repo, context, horizon, freq, ft, l1,
                                                                            longer, force, lite, known):
    arguments = dict(context_length=context, prediction_length=horizon, freq=freq, freq_prefix_tuning=ft,
                     prefer_l1_loss=l1, prefer_longer_context=longer, force_return=force)
    try:
        theirs = granite_get_model()(repo, return_model_key=True, use_lite=lite, prefer_known_mappings=known,
                                     **arguments)
    except ValueError:
        theirs = None
    if theirs is None:
        with pytest.raises(ConfigError):
            choose_release(repo, use_lite=lite, prefer_known_mappings=known, **arguments)
        return
    choice = choose_release(repo, use_lite=lite, prefer_known_mappings=known, **arguments)
    assert choice.release.key == theirs and choice.release.repo_id == repo
    assert choice.prediction_filter_length == (horizon if choice.release.prediction_length > horizon else None)


def test_choose_release_errors_say_what_would_fit():
    with pytest.raises(ConfigError, match="shorter than every .* shortest is 512.*zeropad"):
        choose_release("ibm-granite/granite-timeseries-ttm-r1", 100, 96)
    with pytest.raises(ConfigError, match="forecasts 1000 steps .*at most 720.*rolling"):
        choose_release("ibm-granite/granite-timeseries-ttm-r2", 600, 1000)
    assert choose_release("ibm-granite/granite-timeseries-ttm-r2", 600, 1000, force_return="rolling").release.key \
        == "512-720-r2"
    with pytest.raises(ConfigError, match="no r3 revision has both a context_length of at most 40 and a horizon.*zeropad"):
        choose_release(R3_REPOS[0], 40, 96)
    with pytest.raises(ConfigError, match="not a TinyTimeMixer repo with known revisions.*revision="):
        choose_release("someone/model", 512, 96)
    with pytest.raises(ConfigError, match="force_return must be one of"):
        choose_release("ibm-granite/granite-timeseries-ttm-r2", 512, 96, force_return="pad")
    with pytest.raises(ConfigError, match="context_length must be a positive integer"):
        choose_release("ibm-granite/granite-timeseries-ttm-r2", 0, 96)


SMALL = dict(context_length=32, patch_length=8, patch_stride=8, d_model=16, num_layers=1, decoder_d_model=8,
             decoder_num_layers=1, adaptive_patching_levels=1, num_input_channels=1)


@pytest.fixture()
def hub():
    server = HubStandIn().start()
    yield server
    server.stop()


def test_get_model_loads_the_chosen_branch_with_the_horizon_cut(hub, tmp_path, monkeypatch):
    """Two branches of a repo named as the r2 repo: get_model asks for the one granite-tsfm would and cuts its
    horizon to the request; model_revision loads a branch as it is."""
    repo = "ibm-granite/granite-timeseries-ttm-r2"
    references = {}
    for seed, (branch, context, horizon) in enumerate((("main", 512, 96), ("1024-192-r2", 1024, 192))):
        reference = build_reference(seed=seed, **{**SMALL, "context_length": context, "prediction_length": horizon,
                                                  "patch_length": 64, "patch_stride": 64}).double()
        folder = tmp_path / branch
        reference.save_pretrained(folder)
        hub.add_commit(repo, folder, branches=(branch,))
        references[branch] = reference
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    series = np.random.default_rng(0).normal(size=(2, 1100, 3))
    model = rustml_nb.get_model(repo, 1100, 150, cache_dir=tmp_path / "cache", dtype="float64")
    assert (model.config.context_length, model.config.prediction_length, model.horizon) == (1024, 192, 150)
    with torch.no_grad():
        expected = references["1024-192-r2"](torch.from_numpy(series[:, -1024:])).prediction_outputs.numpy()
    ours = model(series).prediction_outputs
    assert ours.shape == (2, 150, 3)  # three channels on a one-channel checkpoint, as granite-tsfm runs it
    np.testing.assert_allclose(ours, expected[:, :150], rtol=1e-9, atol=1e-9)

    model = rustml_nb.get_model(repo, 600, 90, cache_dir=tmp_path / "cache", dtype="float64")
    assert (model.config.context_length, model.horizon) == (512, 90)
    model = rustml_nb.get_model(repo, model_revision="1024-192-r2", cache_dir=tmp_path / "cache")
    assert (model.config.context_length, model.horizon) == (1024, 192)
    with pytest.raises(ConfigError, match="give context_length and prediction_length"):
        rustml_nb.get_model(repo, cache_dir=tmp_path / "cache")


def test_get_model_loads_an_r3_decomposed_branch(hub, tmp_path, monkeypatch):
    """An r3 repo's -dec- branch, chosen as granite-tsfm chooses it, loads as the decomposed model."""
    repo = "ibm-research/ttm-r3"
    kwargs = {**SMALL, "context_length": 512, "prediction_length": 30, "patch_length": 16, "patch_stride": 16,
              "decompose": True, "residual_context_length": 90}
    reference = build_reference("TinyTimeMixerForDecomposedPrediction", seed=3, **kwargs).double()
    reference.save_pretrained(tmp_path / "branch")
    hub.add_commit(repo, tmp_path / "branch", branches=("512-30-dec-90-r3",))
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    assert choose_release(repo, 600, 24, prefer_known_mappings=False).revision == "512-30-dec-90-r3"
    model = rustml_nb.get_model(repo, 600, 24, prefer_known_mappings=False, cache_dir=tmp_path / "cache",
                                dtype="float64")
    assert type(model).__name__ == "TinyTimeMixerForDecomposedPrediction" and model.horizon == 24
    series = np.random.default_rng(0).normal(size=(2, 512, 1)).cumsum(axis=1)
    with torch.no_grad():
        expected = reference(torch.from_numpy(series)).prediction_outputs.numpy()
    np.testing.assert_allclose(model(series).prediction_outputs, expected[:, :24], rtol=1e-9, atol=1e-9)


def test_from_pretrained_takes_config_overrides(tmp_path):
    reference = build_reference(prediction_length=12, **SMALL)
    reference.save_pretrained(tmp_path / "model")
    model = rustml_nb.from_pretrained(tmp_path / "model", prediction_filter_length=5)
    assert model(np.ones((32, 1))).prediction_outputs.shape == (5, 1)
    with pytest.raises(ConfigError, match="prediction_filter_length must be in \\[1, prediction_length = 12\\]"):
        rustml_nb.from_pretrained(tmp_path / "model", prediction_filter_length=13)
    with pytest.raises(ConfigError, match=r"has no field\(s\) \['horizon'\]"):
        rustml_nb.TinyTimeMixerForPrediction.from_pretrained(tmp_path / "model", horizon=3)
