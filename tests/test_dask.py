"""rustml_nb.dask.forecast on a real distributed.LocalCluster (two worker processes on 127.0.0.1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import rustml_nb
from rustml_nb import demo
from rustml_nb.errors import InputError

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        yield client


def many_cities(count: int) -> pd.DataFrame:
    """The demo slice's two cities, shifted and scaled into ``count`` series of one target each."""
    history, _ = demo.test_slice()
    long = history.reset_index().melt(id_vars="time", var_name="city", value_name="temperature")
    rng = np.random.default_rng(0)
    parts = []
    for index in range(count):
        part = long[long["city"] == history.columns[index % 2]].copy()
        part["station"] = f"s{index:03d}"
        part["temperature"] = part["temperature"] * rng.uniform(0.5, 2) + rng.uniform(-10, 10)
        parts.append(part[["station", "time", "temperature"]])
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forecasts_on_a_cluster_equal_the_in_process_ones(client, dtype):
    """Bit for bit: a series' forecast does not depend on the other series of its partition."""
    def loads():
        return client.run(lambda: rustml_nb.dask._cached_model.cache_info().misses)

    before = loads()
    table = many_cities(12)
    ddf = dd.from_pandas(table.sample(frac=1, random_state=1), npartitions=4)  # every series spread out
    result = rustml_nb.dask.forecast(ddf, str(demo.TTM_MODEL_PATH), id_columns="station", timestamp_column="time",
                                     dtype=dtype)
    computed = result.compute().sort_values(["station", "time"]).reset_index(drop=True)
    model = rustml_nb.from_pretrained(demo.TTM_MODEL_PATH, dtype=dtype)
    expected = model.forecast(table, id_columns="station", timestamp_column="time")
    expected = expected.sort_values(["station", "time"]).reset_index(drop=True)
    assert list(computed.columns) == ["station", "time", "temperature"] and len(computed) == 12 * 24
    pd.testing.assert_frame_equal(computed[["station", "time"]], expected[["station", "time"]])
    np.testing.assert_array_equal(computed["temperature"], expected["temperature"])
    # the model was loaded once in each worker process, not once per task
    new = {worker: count - before[worker] for worker, count in loads().items()}
    assert len(new) == 2 and all(count <= 1 for count in new.values()) and sum(new.values()) >= 1


def test_dask_inputs_are_checked(client):
    table = many_cities(2)
    with pytest.raises(InputError, match="expected a dask DataFrame"):
        rustml_nb.dask.forecast(table, str(demo.TTM_MODEL_PATH), id_columns="station")
    ddf = dd.from_pandas(table, npartitions=1)
    with pytest.raises(InputError, match="checkpoint's folder or Hub repo id"):
        rustml_nb.dask.forecast(ddf, rustml_nb.from_pretrained(demo.TTM_MODEL_PATH), id_columns="station")
    with pytest.raises(InputError, match=r"id_columns \['site'\] not in the data"):
        rustml_nb.dask.forecast(ddf, str(demo.TTM_MODEL_PATH), id_columns="site")


def test_quantiles_and_partitions_already_by_id(client):
    """A distribution head's quantile columns come through Dask as in process; a table already partitioned
    by id (set_index on it) is not shuffled."""
    history, _ = demo.test_slice()
    rng = np.random.default_rng(2)
    table = pd.concat([history.reset_index().assign(pair=index, seattle=history["seattle"].to_numpy() + rng.normal())
                       for index in range(6)], ignore_index=True)
    ddf = dd.from_pandas(table.set_index("pair"), npartitions=3, sort=True).reset_index()
    result = rustml_nb.dask.forecast(ddf, str(demo.NORMAL_MODEL_PATH), id_columns="pair", timestamp_column="time",
                                     quantiles=[0.1, 0.9], dtype="float64", partitioned_by_id=True)
    assert "shuffle" not in str(result.dask.keys())
    computed = result.compute().sort_values(["pair", "time"]).reset_index(drop=True)
    expected = rustml_nb.from_pretrained(demo.NORMAL_MODEL_PATH, dtype="float64").forecast(
        table, id_columns="pair", timestamp_column="time", quantiles=[0.1, 0.9])
    expected = expected.sort_values(["pair", "time"]).reset_index(drop=True)
    assert list(computed.columns) == list(expected.columns)
    np.testing.assert_array_equal(computed.iloc[:, 2:].to_numpy(), expected.iloc[:, 2:].to_numpy())
