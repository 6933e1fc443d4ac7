"""config.json values of the wrong type are refused as transformers refuses them, naming key, type and value."""

from __future__ import annotations

import dataclasses

import pytest
import transformers
from huggingface_hub.errors import StrictDataclassFieldValidationError

import rustml_nb
from rustml_nb.models.config import check_field_types
from rustml_nb.errors import ConfigError

CANDIDATES = [True, False, 0, 1, 7, -3, 0.5, 1e-5, "false", "mean", "", None, [2], [1.5], ["x"], [[1]], [1, 2],
              [1.0, 2.0], (2,), {}, {"a": 1}]
FIELDS = [f.name for f in dataclasses.fields(rustml_nb.PatchTSTConfig) if f.name != "architectures"]


def transformers_accepts_type(field: str, value) -> bool:
    try:
        transformers.PatchTSTConfig(**{field: value})
    except StrictDataclassFieldValidationError:
        return False
    except Exception:  # a value of the right type that transformers refuses for another reason
        return True
    return True


def our_type_check_accepts(field: str, value) -> bool:
    config = rustml_nb.PatchTSTConfig.__new__(rustml_nb.PatchTSTConfig)
    for f in dataclasses.fields(rustml_nb.PatchTSTConfig):
        setattr(config, f.name, f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
    setattr(config, field, value)
    try:
        check_field_types(config)
    except ConfigError:
        return False
    return True


def test_types_are_checked_as_transformers_checks_them():
    """Every field against every candidate value: refused by type here exactly when transformers' strict
    config refuses it."""
    disagreements = [(field, value) for field in FIELDS for value in CANDIDATES
                     if our_type_check_accepts(field, value) != transformers_accepts_type(field, value)]
    assert disagreements == []


@pytest.mark.parametrize("field, value, message", [
    ("pre_norm", "false", r"pre_norm must be true/false, got 'false' \(str\)"),
    ("pre_norm", 0, r"pre_norm must be true/false, got 0 \(int\)"),
    ("pre_norm", None, r"pre_norm must be true/false, got None"),
    ("use_cls_token", "false", "use_cls_token must be true/false"),
    ("mask_value", "abc", r"mask_value must be an integer, got 'abc'"),
    ("d_model", 128.0, r"d_model must be an integer, got 128.0 \(float\)"),
    ("architectures", 5, r"architectures must be a list of strings or null, got 5"),
    ("architectures", [["x"]], "architectures must be a list of strings"),
    ("architectures", [{}], "architectures must be a list of strings"),
    ("output_range", "ab", "output_range must be a list or null"),
])
def test_messages_name_key_type_and_value(field, value, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        rustml_nb.PatchTSTConfig.from_dict({"model_type": "patchtst", field: value}, source="config.json")


def test_a_bad_value_in_a_checkpoint_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "patchtst", "pre_norm": "false"}')
    with pytest.raises(ConfigError, match=r"config.json: pre_norm must be true/false"):
        rustml_nb.ModelBundle.from_dir(tmp_path)
