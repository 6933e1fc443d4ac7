"""Many series: throughput of forecast(long table, id_columns=...) in one process and of rustml_nb.dask.forecast
on a two-worker distributed.LocalCluster (127.0.0.1), on 100,000 series of the bundled demo's shape (336 hourly
steps x 2 channels -> 24 steps), with what Dask adds (per partition, and the scheduler's time).

    pip install -e ".[bench,dask]" && python benchmarks/panel.py       # ~3 minutes on 2 cores
    python benchmarks/panel.py --series 20000                           # smaller; prints, writes nothing

A full run writes benchmarks/results/panel.{json,md}. The table is built partitioned by id for Dask
(``partitioned_by_id=True``: no shuffle); the partition count is varied to show what a partition should be.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"


def build_table(series: int) -> pd.DataFrame:
    """``series`` copies of the demo slice's history, each shifted and scaled: id, time, two targets."""
    from rustml_nb import demo

    history, _ = demo.test_slice()
    rows = len(history)
    rng = np.random.default_rng(0)
    scale = np.repeat(rng.uniform(0.5, 2.0, series), rows)[:, None]
    shift = np.repeat(rng.uniform(-10, 10, series), rows)[:, None]
    values = np.tile(history.to_numpy(), (series, 1)) * scale + shift
    return pd.DataFrame({"id": np.repeat(np.arange(series), rows), "time": np.tile(history.index.to_numpy(), series),
                         "seattle": values[:, 0], "san_francisco": values[:, 1]})


def one_process(table: pd.DataFrame) -> dict:
    import rustml_nb
    from rustml_nb import demo

    model = rustml_nb.from_pretrained(demo.MODEL_PATH)
    model.forecast(table[table["id"] < 2], id_columns="id", timestamp_column="time")  # kernels loaded
    started = time.perf_counter()
    forecast = model.forecast(table, id_columns="id", timestamp_column="time")
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "series_per_s": table["id"].nunique() / seconds, "rows_out": len(forecast)}


def on_cluster(table: pd.DataFrame, partitions: int, client) -> dict:
    import dask.dataframe as dd

    import rustml_nb.dask
    from rustml_nb import demo

    ddf = dd.from_pandas(table.set_index("id"), npartitions=partitions, sort=True).reset_index()
    ddf = client.persist(ddf)  # the table in the workers' memory, as a read from Parquet would leave it
    ddf.count().compute()
    model = str(demo.MODEL_PATH)
    rustml_nb.dask.forecast(ddf, model, id_columns="id", timestamp_column="time",
                            partitioned_by_id=True).compute()  # every worker has loaded the model
    started = time.perf_counter()
    forecast = rustml_nb.dask.forecast(ddf, model, id_columns="id", timestamp_column="time",
                                       partitioned_by_id=True).compute()
    seconds = time.perf_counter() - started
    started = time.perf_counter()  # Dask's own cost: the same partitions through a task that does nothing
    ddf.map_partitions(lambda part: part.iloc[:0]).compute()
    empty = time.perf_counter() - started
    series = table["id"].nunique()
    return {"partitions": partitions, "series_per_partition": series / partitions, "seconds": seconds,
            "series_per_s": series / seconds, "rows_out": len(forecast), "empty_tasks_s": empty}


def markdown(report: dict) -> str:
    alone = report["one_process"]
    lines = ["# Many series: one process and a Dask cluster", "", report["machine"], "",
             f"{report['series']:,} series of the bundled demo's shape (336 hourly steps x 2 channels -> 24 steps), "
             "already in memory (a pandas DataFrame; for Dask, persisted in the workers, partitioned by id).", "",
             "| where | partitions | series per partition | seconds | series/s | Dask alone (empty tasks) |",
             "|---|---|---|---|---|---|",
             f"| one process, `model.forecast(table, id_columns=...)` | | | {alone['seconds']:.2f} | "
             f"{alone['series_per_s']:,.0f} | |"]
    for row in report["cluster"]:
        lines.append(f"| LocalCluster, 2 worker processes x 1 thread | {row['partitions']} | "
                     f"{row['series_per_partition']:,.0f} | {row['seconds']:.2f} | {row['series_per_s']:,.0f} | "
                     f"{row['empty_tasks_s']:.2f} s ({row['empty_tasks_s'] / row['partitions'] * 1e3:.0f} ms a "
                     "partition) |")
    best = max(report["cluster"], key=lambda row: row["series_per_s"])
    lines += ["", "Dask alone: the same partitions through a task that does nothing (scheduling and moving "
              f"results). Best here: {best['partitions']} partitions of {best['series_per_partition']:,.0f} "
              "series; the one-process run uses both cores for the model but one for the table's conversion.",
              ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, nargs="+", default=[4, 16, 64])
    args = parser.parse_args()
    import distributed

    table = build_table(args.series)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "series": args.series, "one_process": one_process(table), "cluster": []}
    print(f"one process: {report['one_process']['seconds']:.2f} s", flush=True)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        for partitions in args.partitions:
            row = on_cluster(table, partitions, client)
            report["cluster"].append(row)
            print(f"{partitions} partitions: {row['seconds']:.2f} s", flush=True)
    print(markdown(report))
    if args.series == 100_000:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "panel.json").write_text(json.dumps(report, indent=2) + "\n")
        (RESULTS / "panel.md").write_text(markdown(report))


if __name__ == "__main__":
    main()
