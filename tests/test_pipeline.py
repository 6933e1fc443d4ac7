"""Config, name mapping, detection, transposition and loading, over drawn configs of all five classes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import transformers
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import rustml_nb
from rustml_nb.models.patchtst.detection import OPTIONAL_NAMES, expected_shapes
from rustml_nb.errors import (ArchitectureMismatchError, ShapeMismatchError, UnsupportedArchitectureError,
                              WeightMappingError)
from rustml_nb.models.layers import Linear, Norm
from rustml_nb.models.patchtst.mapping import hf_name
from reference import CLASS_NAMES, build_reference, state_dict_numpy
from strategies import patchtst_kwargs

HEAD_OF_CLASS = {"PatchTSTModel": "none", "PatchTSTForPrediction": "prediction", "PatchTSTForPretraining": "pretraining",
                 "PatchTSTForClassification": "classification", "PatchTSTForRegression": "regression"}


@st.composite
def checkpoints(draw):
    """(class name, config kwargs, transformers state dict): transformers can build every one of these,
    per-channel projection heads included (it only fails to run them)."""
    class_name = draw(st.sampled_from(CLASS_NAMES))
    kwargs = draw(patchtst_kwargs(class_name, runnable_in_transformers=False))
    model = build_reference(class_name, seed=draw(st.integers(0, 100)), **kwargs)
    return class_name, kwargs, state_dict_numpy(model)


def test_config_has_every_transformers_field_with_its_default():
    theirs = transformers.PatchTSTConfig()
    ours = rustml_nb.PatchTSTConfig()
    names = [f.name for f in dataclasses.fields(rustml_nb.PatchTSTConfig) if f.name != "architectures"]
    declared = [name for name in transformers.PatchTSTConfig.__annotations__ if not name.startswith("_")
                and name not in ("model_type", "attribute_map")]
    assert sorted(declared) == sorted(names)
    for name in names:
        expected = getattr(theirs, name)
        expected = list(expected) if isinstance(expected, tuple) else expected
        assert getattr(ours, name) == expected, name


@given(checkpoints())
def test_mapping_is_a_bijection_onto_what_the_config_needs(checkpoint):
    class_name, kwargs, state = checkpoint
    result = rustml_nb.map_patchtst_weights(state)
    assert result.unmapped == []
    assert len(result.mapped) == len(state)  # no two keys on one name
    for ours, key in result.sources.items():
        assert hf_name(ours, prefixed=class_name != "PatchTSTModel") == key  # the table read backwards
        np.testing.assert_array_equal(result.mapped[ours], state[key])
    config = rustml_nb.PatchTSTConfig(**kwargs)
    shapes = expected_shapes(config, HEAD_OF_CLASS[class_name])
    assert set(result.mapped) == set(shapes)
    for name, shape in shapes.items():
        assert result.mapped[name].shape == shape, name


@given(checkpoints())
def test_detection_agrees_with_the_config_that_built_the_weights(checkpoint):
    class_name, kwargs, state = checkpoint
    config = rustml_nb.PatchTSTConfig(**kwargs, architectures=[class_name])
    mapped = rustml_nb.map_patchtst_weights(state).mapped
    check = rustml_nb.check_patchtst_compatibility(mapped, config)
    assert check.kind == "ChannelIndependent" and check.got == config.patch_length
    assert check.mismatches == []
    report = check.report
    head = HEAD_OF_CLASS[class_name]
    assert head in report.head_candidates and report.head == head
    assert report.d_model == config.d_model and report.num_hidden_layers == config.num_hidden_layers
    assert report.use_cls_token == config.use_cls_token and report.share_embedding == config.share_embedding
    assert report.positional_encoding_type == config.positional_encoding_type
    if config.num_hidden_layers:
        assert report.norm_type == config.norm_type and report.ffn_dim == config.ffn_dim
        assert report.channel_attention == config.channel_attention and report.bias == config.bias
    distribution = head in ("prediction", "regression") and config.loss != "mse"
    expected_count = {"student_t": 3, "normal": 2, "negative_binomial": 2}[config.distribution_output] if distribution else 0
    assert report.distribution_parameter_count == expected_count
    if head == "prediction":
        assert report.share_projection == config.share_projection


@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=9),
                  elements=st.floats(-1e6, 1e6, allow_nan=False)),
       st.sampled_from(["float32", "float64"]))
def test_transposition_round_trips(weight, dtype):
    linear = Linear.from_state_dict({"x.weight": weight, "x.bias": weight[:, 0]}, "x", dtype)
    assert linear.weight.shape == weight.shape[::-1] and linear.weight.flags.c_contiguous
    assert linear.weight.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(linear.weight.T, weight.astype(dtype))
    np.testing.assert_array_equal(linear.bias, weight[:, 0].astype(dtype))
    without_bias = Linear.from_state_dict({"x.weight": weight}, "x", dtype)
    assert not without_bias.bias.any() and without_bias.bias.shape == (weight.shape[0],)


def test_batchnorm_keeps_running_statistics():
    state = {"n.weight": np.full(3, 2.0), "n.bias": np.ones(3), "n.running_mean": np.array([0.5, -1, 2]),
             "n.running_var": np.array([4.0, 1, 0.25])}
    norm = Norm.from_state_dict(state, "n", "batchnorm", np.float32)
    np.testing.assert_array_equal(norm.running_mean, state["n.running_mean"])
    np.testing.assert_array_equal(norm.running_var, state["n.running_var"])
    model = build_reference("PatchTSTModel", seed=4, num_input_channels=2, context_length=12, patch_length=4,
                            patch_stride=4, d_model=8, num_attention_heads=2, num_hidden_layers=2)
    ours = rustml_nb.PatchTSTModel.from_hub_weights(model_config(model), state_dict_numpy(model))
    for layer in range(2):
        for which, index in (("norm_sublayer1", 0), ("norm_sublayer3", 2)):
            bn = getattr(model.encoder.layers[layer], which).batchnorm
            np.testing.assert_array_equal(ours.weights.encoder.norm_mean[layer, index], bn.running_mean.numpy())
            np.testing.assert_array_equal(ours.weights.encoder.norm_var[layer, index], bn.running_var.numpy())
            assert bn.eps == ours.config.norm_eps


def model_config(model) -> rustml_nb.PatchTSTConfig:
    return rustml_nb.PatchTSTConfig.from_dict(model.config.to_dict())


SMALL = dict(num_input_channels=2, context_length=12, patch_length=4, patch_stride=4, d_model=8,
             num_attention_heads=2, ffn_dim=8, num_hidden_layers=1, prediction_length=3)


@pytest.fixture(scope="module")
def prediction():
    model = build_reference("PatchTSTForPrediction", seed=7, **SMALL)
    return model_config(model), state_dict_numpy(model)


def test_unmapped_and_missing_keys_are_listed(prediction):
    config, state = prediction
    state = dict(state)
    state["model.encoder.extra.weight"] = np.zeros(2)
    del state["head.projection.bias"]
    with pytest.raises(WeightMappingError) as error:
        rustml_nb.PatchTSTForPrediction.from_hub_weights(config, state)
    assert error.value.unmapped == ["model.encoder.extra.weight"]
    assert error.value.missing == ["head.projection.bias"]
    assert "model.encoder.extra.weight" in str(error.value) and "head.projection.bias" in str(error.value)


@pytest.mark.parametrize("dropped", ["model.encoder.layers.0.ff.0.bias", "model.encoder.layers.0.ff.3.bias"])
def test_one_missing_feed_forward_bias_is_named(prediction, dropped):
    """A checkpoint whose feed-forward Linears have biases but lacks one of them: the load names that tensor,
    rather than reporting the config's `bias` as disagreeing with the weights."""
    config, state = prediction
    assert config.bias
    state = {key: value for key, value in state.items() if key != dropped}
    with pytest.raises(WeightMappingError) as error:
        rustml_nb.PatchTSTForPrediction.from_hub_weights(config, state)
    ours = "encoder_layers.0.ff.linear1.bias" if ".ff.0." in dropped else "encoder_layers.0.ff.linear2.bias"
    assert error.value.missing == [ours] and ours in str(error.value)


def test_two_keys_for_one_name_are_refused(prediction):
    config, state = prediction
    state = dict(state, **{"encoder.positional_encoder.position_enc": state["model.encoder.positional_encoder.position_enc"]})
    with pytest.raises(WeightMappingError, match="both map to 'positional_encoding'"):
        rustml_nb.map_patchtst_weights(state)


def test_tensor_of_the_wrong_shape_names_key_and_shapes(prediction):
    config, state = prediction
    state = dict(state, **{"head.projection.bias": np.zeros(5, np.float32)})
    with pytest.raises(ShapeMismatchError, match=r"'head.projection.bias'.*\[3\].*\[5\]"):
        rustml_nb.PatchTSTForPrediction.from_hub_weights(config, state)


def test_config_and_weights_disagreeing_names_both_values(prediction):
    config, state = prediction
    wrong = dataclasses.replace(config, num_hidden_layers=3)
    with pytest.raises(ArchitectureMismatchError, match="num_hidden_layers: config says 3, weights say 1"):
        rustml_nb.PatchTSTForPrediction.from_hub_weights(wrong, state)
    named = dataclasses.replace(config, architectures=["PatchTSTForPrediction"])
    with pytest.raises(ArchitectureMismatchError, match=r"architectures say \['PatchTSTForPrediction'\]"):
        rustml_nb.PatchTSTForRegression.from_hub_weights(named, state)
    with pytest.raises(ArchitectureMismatchError, match="head: config says 'regression'"):
        rustml_nb.PatchTSTForRegression.from_hub_weights(config, state)


def test_channel_dependent_and_unknown_embeddings_are_detected(prediction):
    config, state = prediction
    d_model, channels, patch = config.d_model, config.num_input_channels, config.patch_length
    key = "model.encoder.embedder.input_embedding.weight"
    cd = dict(state, **{key: np.zeros((d_model, patch * channels), np.float32)})
    check = rustml_nb.check_patchtst_compatibility(rustml_nb.map_patchtst_weights(cd).mapped, config)
    assert (check.kind, check.expected_ci, check.expected_cd, check.got) == ("ChannelDependent", 4, 8, 8)
    with pytest.raises(UnsupportedArchitectureError, match="channel-dependent"):
        rustml_nb.PatchTSTForPrediction.from_hub_weights(config, cd)
    odd = dict(state, **{key: np.zeros((d_model, 5), np.float32)})
    check = rustml_nb.check_patchtst_compatibility(rustml_nb.map_patchtst_weights(odd).mapped, config)
    assert check.kind == "Unknown" and check.got == 5
    with pytest.raises(ArchitectureMismatchError, match=r"config implies 4 .* or 8 .* the weights have 5"):
        rustml_nb.PatchTSTForPrediction.from_hub_weights(config, odd)


def test_from_pretrained_picks_the_class_config_names(tmp_path):
    for class_name in CLASS_NAMES:
        folder = tmp_path / class_name
        build_reference(class_name, seed=1, **SMALL).save_pretrained(folder)
        model = rustml_nb.from_pretrained(folder, dtype="float64")
        assert type(model).__name__ == class_name and model.dtype == np.float64
        assert all(a.flags.c_contiguous and a.dtype == np.float64
                   for a in (*model.weights.encoder, *model.weights.head))


def test_optional_names_are_only_batchnorm_counters():
    shapes = expected_shapes(rustml_nb.PatchTSTConfig(**SMALL), "prediction")
    assert {n for n in shapes if OPTIONAL_NAMES.match(n)} == {n for n in shapes if n.endswith("num_batches_tracked")}
