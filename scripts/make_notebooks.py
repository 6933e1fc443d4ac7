"""Write the notebooks in notebooks/ from the cells below and execute them, so they are stored with their
outputs (run it after editing the cells or after a new benchmark run; CI executes them again)."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parents[1] / "notebooks"

QUICKSTART = [
    new_markdown_cell("""# rustml_nb quickstart

Load a PatchTST checkpoint, forecast, and look at the forecast next to what really happened. The model
here is the one bundled with rustml_nb: a small `PatchTSTForPrediction` trained with transformers on
hourly temperatures of Seattle and San Francisco (2010, °F; `scripts/train_demo_model.py`). Everything
runs offline, without PyTorch."""),
    new_code_cell("""import pandas as pd
import matplotlib.pyplot as plt

import rustml_nb
from rustml_nb import demo

model = rustml_nb.from_pretrained(demo.MODEL_PATH)   # or a Hub repo id, e.g. "org/name"
model"""),
    new_markdown_cell("The bundled slice of the test period: 336 hours of history and the 24 hours that followed."),
    new_code_cell("""history, actual = demo.test_slice()
forecast = model.forecast(history)          # a DataFrame in, a DataFrame out, indexed by the future
forecast.join(actual, lsuffix=" forecast", rsuffix=" actual").head()"""),
    new_code_cell("""fig, axes = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
for axis, column in zip(axes, forecast.columns):
    history[column].iloc[-96:].plot(ax=axis, color="0.4", label="history")
    actual[column].plot(ax=axis, color="black", label="actual")
    forecast[column].plot(ax=axis, color="tab:red", label="forecast")
    axis.set_title(column, loc="left"); axis.legend(loc="upper left")
fig.tight_layout()"""),
    new_markdown_cell("""How good is it? The training script measured the model on the whole test period (Oct 20 to Dec 31,
73 non-overlapping 24-hour windows) against two naive forecasts: repeating the last value, and repeating
the last day."""),
    new_code_cell("""pd.DataFrame(demo.metrics()["test_metrics"]).T"""),
    new_markdown_cell("""The raw model call takes `[batch, context_length, channels]` arrays and returns transformers' output
fields; missing values can be NaN (or marked in `past_observed_mask`)."""),
    new_code_cell("""values = history.to_numpy()[None]            # [1, 336, 2]
values[0, 100:110, 0] = float("nan")          # ten missing hours
output = model(values)
output.prediction_outputs.shape, output.loc.ravel(), output.scale.ravel()"""),
    new_markdown_cell("""## TinyTimeMixer

IBM's TinyTimeMixer (TTM) runs the same way. Bundled here is a small `TinyTimeMixerForPrediction` trained with
granite-tsfm on the same data and split (`scripts/train_ttm_demo_model.py`). The granite TTM checkpoints on
the Hub load with `rustml_nb.from_pretrained("ibm-granite/granite-timeseries-ttm-r2", revision=...)`, or
with `rustml_nb.get_model(repo, context_length, prediction_length)`, which picks the revision as
granite-tsfm's `get_model` does; their channels never mix, so they take any number of channels."""),
    new_code_cell("""ttm = rustml_nb.from_pretrained(demo.TTM_MODEL_PATH)
ttm_forecast = ttm.forecast(history)
pd.concat({"PatchTST": forecast, "TinyTimeMixer": ttm_forecast, "actual": actual}, axis=1).head()"""),
    new_code_cell("""pd.DataFrame(demo.metrics(demo.TTM_METRICS)["test_metrics"]).T"""),
]

PARITY = [
    new_markdown_cell("""# Parity with transformers, layer by layer

rustml_nb's reference for every number is transformers. Here both run the bundled checkpoint on the same
input, and we look at the largest difference of every output field and of every encoder layer's input,
in float64 and in float32. (`rustml-nb parity MODEL` prints the same table for any checkpoint.)"""),
    new_code_cell("""import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import torch
import transformers

import rustml_nb
from rustml_nb import demo
from rustml_nb.parity import TOLERANCE, field_differences, reference_outputs

transformers.utils.logging.disable_progress_bar()
history, _ = demo.test_slice()
rows = []
for dtype, torch_dtype in (("float64", torch.float64), ("float32", torch.float32)):
    ours = rustml_nb.from_pretrained(demo.MODEL_PATH, dtype=dtype)
    theirs = transformers.PatchTSTForPrediction.from_pretrained(demo.MODEL_PATH, dtype=torch_dtype).eval()
    values = history.to_numpy(dtype)[None]
    for d in field_differences(ours(values, output_hidden_states=True),
                               reference_outputs(theirs, values, output_hidden_states=True)):
        rows.append({"dtype": dtype, "output": d.field, "max abs": d.max_abs, "relative": d.relative,
                     "tolerance": TOLERANCE[dtype]})
table = pd.DataFrame(rows)
table"""),
    new_code_cell("""fig, axis = plt.subplots(figsize=(8, 3.5))
for dtype, group in table.groupby("dtype"):
    axis.semilogy(group["output"], group["relative"].clip(lower=1e-18), "o-", label=f"{dtype}")
    axis.axhline(TOLERANCE[dtype], ls="--", lw=0.8, color="C0" if dtype == "float32" else "C1")
axis.set_ylabel("max |difference| / (1 + max |reference|)")
axis.set_title("rustml_nb vs transformers (dashed: tolerance)")
axis.legend(); plt.xticks(rotation=20); fig.tight_layout()
assert (table["relative"] <= table["tolerance"]).all()"""),
    new_markdown_cell("""The same for PatchTSMixer, on a `PatchTSMixerForPrediction` of the granite checkpoint's dimensions
(7 channels, context 512, patch 8, horizon 96; d_model 16, 8 layers) with random weights (LayerNorm
parameters included), saved by transformers and loaded by rustml_nb: every field, and the output of every
mixer layer."""),
    new_code_cell("""import tempfile
from rustml_nb.parity import random_reference_model

config = dict(num_input_channels=7, context_length=512, patch_length=8, patch_stride=8, d_model=16, num_layers=8,
              expansion_factor=2, gated_attn=True, mode="common_channel", scaling="std", prediction_length=96)
folder = tempfile.mkdtemp()
random_reference_model("PatchTSMixerForPrediction", seed=0, **config).save_pretrained(folder)
values = np.random.default_rng(0).normal(10, 3, (4, 512, 7))
rows = []
for dtype, torch_dtype in (("float64", torch.float64), ("float32", torch.float32)):
    ours = rustml_nb.from_pretrained(folder, dtype=dtype)
    theirs = transformers.PatchTSMixerForPrediction.from_pretrained(folder, dtype=torch_dtype).eval()
    for d in field_differences(ours(values.astype(dtype), output_hidden_states=True),
                               reference_outputs(theirs, values.astype(dtype), output_hidden_states=True)):
        rows.append({"dtype": dtype, "output": d.field, "max abs": d.max_abs, "relative": d.relative,
                     "tolerance": TOLERANCE[dtype]})
mixer = pd.DataFrame(rows)
assert (mixer["relative"] <= mixer["tolerance"]).all()
mixer.pivot(index="output", columns="dtype", values="relative")"""),
    new_markdown_cell("""TinyTimeMixer's reference is IBM's granite-tsfm (`tsfm_public`), not transformers. The bundled TTM demo
against it, on the demo slice: every output field and every hidden state granite-tsfm lists (each adaptive
level's input, its split rows, every mixer layer's output, the level's output; then the decoder's)."""),
    new_code_cell("""from rustml_nb.models.tinytimemixer import REFERENCE
from rustml_nb.parity import load_reference, reference_module

granite = reference_module(REFERENCE)
rows = []
for dtype, torch_dtype in (("float64", torch.float64), ("float32", torch.float32)):
    ours = rustml_nb.from_pretrained(demo.TTM_MODEL_PATH, dtype=dtype)
    theirs = load_reference(granite, "TinyTimeMixerForPrediction", demo.TTM_MODEL_PATH, torch_dtype)
    values = history.to_numpy(dtype)[None]
    for d in field_differences(ours(values, output_hidden_states=True),
                               reference_outputs(theirs, values, output_hidden_states=True)):
        rows.append({"dtype": dtype, "output": d.field, "relative": d.relative, "tolerance": TOLERANCE[dtype]})
ttm = pd.DataFrame(rows)
assert (ttm["relative"] <= ttm["tolerance"]).all()
ttm.pivot(index="output", columns="dtype", values="relative").sort_values("float32", ascending=False).head(8)"""),
]

SPEED = [
    new_markdown_cell("""# Speed: rustml_nb, PyTorch eager and ONNX Runtime

The numbers come from `benchmarks/speed.py`, which times the three engines interleaved in one process on
each model family's granite-shaped checkpoint (PatchTST like ibm-granite/granite-timeseries-patchtst,
PatchTSMixer like ibm-granite/granite-timeseries-patchtsmixer, TinyTimeMixer like
ibm-granite/granite-timeseries-ttm-r2 512-96, whose eager reference is granite-tsfm): times are medians
over the rounds, ratios the median of each round's ratio. This notebook plots the last committed run
(`benchmarks/results/speed.json`); rerun the script to measure your machine."""),
    new_code_cell("""import json
from pathlib import Path

import pandas as pd
import matplotlib.pyplot as plt

results = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "benchmarks" / "results").is_dir())
report = json.loads((results / "benchmarks" / "results" / "speed.json").read_text())
print(report["machine"], f"- GEMM peak {report['gemm_peak_gflops']:.0f} GFLOP/s")
print("peak measured with:", report["blas_kernels"])
rows = [{"family": family, "batch": r["batch"], "engine": name, **e}
        for family, result in report["families"].items() for r in result["granite"]
        for name, e in r["engines"].items()]
table = pd.DataFrame(rows)
table.pivot_table(index=["family", "batch"], columns="engine", values="median_ms").round(2)"""),
    new_code_cell("""families = list(report["families"])
fig, axes = plt.subplots(len(families), 2, figsize=(11, 3.6 * len(families)), squeeze=False)
for (left, right), family in zip(axes, families):
    part = table[table["family"] == family]
    part.pivot(index="batch", columns="engine", values="series_per_s").plot.bar(ax=left, rot=0)
    left.legend(loc="lower right", fontsize=8)
    left.set_ylabel("series per second"); left.set_title(f"{family}: throughput")
    granite = report["families"][family]["granite"]
    ratios = pd.DataFrame({"vs torch": [r["speedup_vs_torch"] for r in granite],
                           "vs ONNX Runtime": [r["speedup_vs_onnxruntime"] for r in granite]},
                          index=[r["batch"] for r in granite])
    ratios.plot.bar(ax=right, rot=0)
    right.axhline(1.0, color="black", lw=0.8)
    right.set_ylabel("rustml_nb speed-up (above 1: faster)"); right.set_xlabel("batch")
    right.set_title(f"{family}: ratios")
fig.tight_layout()"""),
    new_markdown_cell("""The first forecast of a new process (`benchmarks/cold_start.py`): rustml_nb compiling its kernels
on an empty cache, loading them from a warm one, and transformers + torch (granite-tsfm for
TinyTimeMixer), for each family. Then the
compile profiles: the seconds each kernel takes to compile (exclusive of the kernels it calls)."""),
    new_code_cell("""cold = json.loads((results / "benchmarks" / "results" / "cold_start.json").read_text())
pd.concat({family: pd.DataFrame(result["cases"]).T[["seconds", "process_wall_s", "peak_rss_mib"]].astype(float)
           for family, result in cold["families"].items()}).round(2)"""),
    new_code_cell("""fig, axes = plt.subplots(1, len(cold["families"]), figsize=(12, 4), squeeze=False)
for axis, (family, result) in zip(axes[0], cold["families"].items()):
    profile = pd.DataFrame(result["compile_profile"]).set_index("kernel")
    profile = profile[~profile.index.str.startswith("(numba)")]
    profile.index = profile.index.str.split(".").str[-1]
    profile["exclusive_s"].sort_values().plot.barh(ax=axis, title=f"{family}: compile seconds per kernel")
fig.tight_layout()"""),
]

MANY_SERIES = [
    new_markdown_cell("""# Many series, intervals, and a Dask cluster

A long table of many series (an id, a timestamp, a target), forecast in one call with 10–90% bands, then
the same table on a local Dask cluster, read from and written to Parquet. The model is the bundled PatchTST
with a normal distribution head (`scripts/train_demo_model.py --distribution normal`: the demo's data, split
and architecture, its head predicting a mean and a spread per step)."""),
    new_code_cell("""import numpy as np
import pandas as pd
import matplotlib.pyplot as plt

import rustml_nb
from rustml_nb import demo

model = rustml_nb.from_pretrained(demo.NORMAL_MODEL_PATH)
history, actual = demo.test_slice()
rng = np.random.default_rng(0)
stations = []  # 40 stations: the two cities' histories, each shifted and scaled
for index in range(40):
    city = history.columns[index % 2]
    station = history[[city]].rename(columns={city: "temperature"}) * rng.uniform(0.8, 1.2) + rng.uniform(-5, 5)
    stations.append(station.reset_index().assign(station=f"station {index:02d}", city=city))
table = pd.concat(stations, ignore_index=True)[["station", "city", "time", "temperature"]]
table.head()"""),
    new_markdown_cell("""The model takes two channels (Seattle, San Francisco), so a series here is a pair of stations, one in
each city: 20 pairs, one column per city, forecast in one call with three quantiles."""),
    new_code_cell("""pairs = table.assign(pair=table["station"].str[-2:].astype(int) // 2)
wide = pairs.pivot_table(index=["pair", "time"], columns="city", values="temperature").reset_index()
wide = wide[["pair", "time", "seattle", "san_francisco"]]
forecast = model.forecast(wide, id_columns="pair", timestamp_column="time", quantiles=[0.1, 0.5, 0.9])
forecast.head()"""),
    new_code_cell("""fig, axes = plt.subplots(2, 2, figsize=(11, 5), sharex=True)
for axis, (pair, city) in zip(axes.ravel(), [(0, "seattle"), (0, "san_francisco"), (7, "seattle"), (7, "san_francisco")]):
    past = wide[wide["pair"] == pair].set_index("time")[city].iloc[-72:]
    ahead = forecast[forecast["pair"] == pair].set_index("time")
    past.plot(ax=axis, color="0.3", label="history")
    ahead[city].plot(ax=axis, color="tab:red", label="forecast (mean)")
    axis.fill_between(ahead.index, ahead[f"{city}_q0.1"], ahead[f"{city}_q0.9"], color="tab:red", alpha=0.2,
                      label="10-90%")
    axis.set_title(f"pair {pair}, {city}", loc="left", fontsize=9)
axes[0, 0].legend(fontsize=8); fig.tight_layout()"""),
    new_markdown_cell("""How well calibrated are the bands? Over the bundled test slice's 24 hours, the share of actual values
inside the model's 10–90% band (0.8 if calibrated; one window of one day, so only a rough check: below 0.8
means the bands were too narrow that day):"""),
    new_code_cell("""alone = model.forecast(history, quantiles=[0.1, 0.9])
inside = [(actual[c].to_numpy() >= alone[f"{c}_q0.1"].to_numpy()) & (actual[c].to_numpy() <= alone[f"{c}_q0.9"].to_numpy())
          for c in history.columns]
float(np.mean(inside))"""),
    new_markdown_cell("""## The same on a Dask cluster

A local cluster of two worker processes; the table goes to Parquet and is read back as a Dask DataFrame, as
a large table would be. Each worker loads the model once, from its path."""),
    new_code_cell("""import logging
import tempfile
import dask.dataframe as dd
import distributed
import rustml_nb.dask

logging.getLogger("distributed.shuffle").setLevel(logging.ERROR)  # its notes on starting a shuffle
folder = tempfile.mkdtemp()
wide.to_parquet(f"{folder}/history.parquet")
with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster, \
        distributed.Client(cluster):
    history_ddf = dd.read_parquet(f"{folder}/history.parquet")
    result = rustml_nb.dask.forecast(history_ddf, str(demo.NORMAL_MODEL_PATH), id_columns="pair",
                                     timestamp_column="time", quantiles=[0.1, 0.5, 0.9])
    result.to_parquet(f"{folder}/forecast")
on_cluster = pd.read_parquet(f"{folder}/forecast").sort_values(["pair", "time"]).reset_index(drop=True)
in_process = forecast.sort_values(["pair", "time"]).reset_index(drop=True)
print(len(on_cluster), "rows; largest difference from the in-process forecast:",
      float(np.abs(on_cluster.iloc[:, 2:].to_numpy() - in_process.iloc[:, 2:].to_numpy()).max()))"""),
]

FROM_ONNX = [
    new_markdown_cell("""# From ONNX

Many deployed models exist only as `.onnx` files. rustml_nb reads a PatchTST export's weights out of the file
(never running its graph) and runs them in its own kernels. Here the bundled demo model is exported with
`torch.onnx.export`, as a user would, and loaded back without a `config.json`: the config is recovered from
the graph. (Reading `.onnx` files needs `pip install "rustml-nb[onnx]"`; exporting needs torch.)"""),
    new_code_cell("""import logging, tempfile, subprocess, warnings
from pathlib import Path
warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm outside Jupyter's widgets
import torch, transformers
transformers.logging.disable_progress_bar()
logging.getLogger("torch.onnx").setLevel(logging.ERROR)              # "torchvision is not installed"

import rustml_nb
from rustml_nb import demo

reference = transformers.PatchTSTForPrediction.from_pretrained(demo.MODEL_PATH).eval()

class Forecast(torch.nn.Module):               # what gets exported: past values in, the forecast out
    def __init__(self, model):
        super().__init__()
        self.model = model
    def forward(self, past_values):
        return self.model(past_values=past_values).prediction_outputs

folder = Path(tempfile.mkdtemp())
example = torch.zeros(1, reference.config.context_length, reference.config.num_input_channels)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.onnx.export(Forecast(reference), (example,), folder / "model.onnx", dynamo=True, verbose=False)
sorted(path.name for path in folder.iterdir())"""),
    new_markdown_cell("""Load the file. No `config.json` lies beside it, so the config comes from the graph; `inspect`
says which fields were recovered and how each tensor was named."""),
    new_code_cell("""from_onnx = rustml_nb.from_pretrained(folder / "model.onnx")
print(subprocess.run(["rustml-nb", "inspect", str(folder / "model.onnx")], capture_output=True, text=True)
      .stdout.split("class")[0])"""),
    new_markdown_cell("""The weights are the checkpoint's bit for bit, so the forecast is the one the safetensors checkpoint
gives, to the last bit."""),
    new_code_cell("""history, actual = demo.test_slice()
from_checkpoint = rustml_nb.from_pretrained(demo.MODEL_PATH)
a, b = from_onnx.forecast(history), from_checkpoint.forecast(history)
print("identical:", a.equals(b))
a.head()"""),
]

for name, cells in (("quickstart", QUICKSTART), ("parity", PARITY), ("speed", SPEED), ("many_series", MANY_SERIES),
                    ("from_onnx", FROM_ONNX)):
    notebook = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                  "language": "python"}})
    NotebookClient(notebook, timeout=600, resources={"metadata": {"path": str(HERE)}}).execute()
    nbformat.write(notebook, HERE / f"{name}.ipynb")
    print("wrote", HERE / f"{name}.ipynb")
