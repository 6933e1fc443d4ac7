"""Forecasting a Dask DataFrame of many series on any ``distributed`` cluster (the ``rustml-nb[dask]`` extra).

Each partition is forecast by ``model.forecast(..., id_columns=...)`` on a worker, with the model loaded once
per worker process (a path or Hub repo id goes to the workers, not the weights) and reused by every task
there. The table is shuffled by its id columns first, so that every series lies in one partition; pass
``partitioned_by_id=True`` when it already does (e.g. ``set_index`` on the id) to skip that.
"""

from __future__ import annotations

import functools
import threading

import numpy as np

from .errors import InputError

_lock = threading.Lock()


@functools.lru_cache(maxsize=8)
def _cached_model(model: str, dtype: str, revision):
    from .registry import from_pretrained

    return from_pretrained(model, revision=revision, dtype=dtype)


def worker_model(model: str, dtype: str = "float32", revision=None):
    """The model for (path or repo id, dtype, revision), loaded once in this process and shared by its tasks
    (a model object may be called from many threads at once)."""
    with _lock:
        return _cached_model(str(model), dtype, revision)


def _forecast_partition(partition, model, dtype, revision, arguments, columns):
    import pandas as pd

    if len(partition) == 0:
        return pd.DataFrame({name: pd.Series(dtype=kind) for name, kind in columns.items()})
    result = worker_model(model, dtype, revision).forecast(partition, **arguments)
    return result.astype(columns)


def forecast(ddf, model, id_columns, timestamp_column=None, target_columns=None, quantiles=None, freq=None,
             pad: bool = False, dtype: str = "float32", revision=None, partitioned_by_id: bool = False):
    """A Dask DataFrame of forecasts for the long table ``ddf`` (id columns, a timestamp column, targets), one
    forecast per series as ``model.forecast(partition, id_columns=..., ...)`` makes it: the id columns, the
    future timestamps, one column per target (and ``{target}_q{q}`` per quantile). ``model``: a checkpoint
    folder or Hub repo id that every worker can reach (loaded once per worker). Lazy: call ``.compute()`` or
    write it out (``.to_parquet(...)``)."""
    import dask.dataframe as dd
    import pandas as pd

    if not isinstance(ddf, dd.DataFrame):
        raise InputError(f"expected a dask DataFrame, got {type(ddf).__name__}; for pandas use model.forecast")
    if not isinstance(model, (str, bytes)) and not hasattr(model, "__fspath__"):
        raise InputError("model: give the checkpoint's folder or Hub repo id (each worker loads it once), not a "
                         f"{type(model).__name__}")
    ids = [id_columns] if isinstance(id_columns, str) else list(id_columns)
    arguments = dict(id_columns=ids, timestamp_column=timestamp_column, target_columns=target_columns,
                     quantiles=quantiles, freq=freq, pad=pad)
    # The output's columns and dtypes: a forecast of the first partition's first series, made here (padded,
    # since before the shuffle it may be cut short by the partition's end).
    head = ddf.get_partition(0).compute()
    if len(head) == 0:
        raise InputError("the first partition is empty: nothing to tell the output's columns from")
    missing = [c for c in ids if c not in head.columns]
    if missing:
        raise InputError(f"id_columns {missing} not in the data; it has {list(head.columns)}"[:300])
    first = head[ids].iloc[0]
    sample = head[np.logical_and.reduce([head[c] == first[c] for c in ids])]
    meta = worker_model(str(model), dtype, revision).forecast(sample, **{**arguments, "pad": True}).iloc[:0]
    columns = meta.dtypes.to_dict()
    if not partitioned_by_id:
        ddf = ddf.shuffle(on=ids)
    return ddf.map_partitions(_forecast_partition, str(model), dtype, revision, arguments, columns,
                              meta=pd.DataFrame({name: pd.Series(dtype=kind) for name, kind in columns.items()}))
