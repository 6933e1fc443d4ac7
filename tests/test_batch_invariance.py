"""A series' forecast does not depend on the other series of its batch, chunk or partition: bit for bit, in
float32 and float64, for the bundled models over batches large enough to span several blocks of rows and both
threads. (Every family's parity tests check the same on their random configurations, see
``reference.assert_each_series_as_alone``.)"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rustml_nb
from rustml_nb import demo
from reference import realistic_series

MODELS = {"patchtst": demo.MODEL_PATH, "tinytimemixer": demo.TTM_MODEL_PATH}


@pytest.fixture(scope="module")
def models():
    return {(family, dtype): rustml_nb.from_pretrained(path, dtype=dtype)
            for family, path in MODELS.items() for dtype in ("float32", "float64")}


@settings(deadline=None, max_examples=12)
@given(family=st.sampled_from(sorted(MODELS)), dtype=st.sampled_from(["float32", "float64"]),
       batch=st.integers(2, 700), data=st.data())
def test_every_series_gets_what_it_gets_alone_or_in_any_chunk(models, family, dtype, batch, data):
    model = models[family, dtype]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    values = realistic_series(rng, batch, model.config.context_length, model.config.num_input_channels)
    values = values.astype(dtype)
    whole = model(values).prediction_outputs
    for i in data.draw(st.lists(st.integers(0, batch - 1), min_size=1, max_size=4, unique=True), label="alone"):
        np.testing.assert_array_equal(model(values[i:i + 1]).prediction_outputs[0], whole[i],
                                      err_msg=f"series {i} of {batch} differs from it alone")
    cut = data.draw(st.integers(1, batch - 1), label="chunk boundary")
    chunks = np.concatenate([model(values[:cut]).prediction_outputs, model(values[cut:]).prediction_outputs])
    np.testing.assert_array_equal(chunks, whole)
