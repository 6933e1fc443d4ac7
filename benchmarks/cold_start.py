"""The first forecast of a new process, for every model family: rustml_nb on an empty and on a warm Numba
cache, against transformers + torch, each case in fresh processes, repeated; and what every kernel costs to
compile.

    pip install -e ".[bench]" && python benchmarks/cold_start.py          # ~9 minutes on 2 cores

PatchTST: import the library, load the bundled demo checkpoint (rustml_nb.from_pretrained / transformers'
PatchTSTForPrediction.from_pretrained), read the bundled history with pandas and forecast it once.
PatchTSMixer and TinyTimeMixer: import, load a checkpoint of the speed benchmark's granite shape (random
weights, saved by transformers / granite-tsfm) and forecast one series (TinyTimeMixer's reference is
granite-tsfm's TinyTimeMixerForPrediction.from_pretrained). "Empty cache" points NUMBA_CACHE_DIR at a new folder, so every
kernel compiles; "warm cache" at one that an earlier process filled. Reported: the median time from the
first line of the script to the forecast, the process's wall time (interpreter start included), its peak
RSS (VmHWM) and, from the empty-cache runs, the compile time of every kernel (Numba's compile events) and
the module it comes from, so a family that compiles another family's kernels shows. Every process has
Python's bytecode cache, as an installed package does. Writes
benchmarks/results/cold_start.{json,md}; the .md's kernel tables are the compile profiles to compare when
kernels are added.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE_CASE = "transformers + torch"  # granite-tsfm (on transformers and torch) for TinyTimeMixer

PREAMBLE = """
import json, time
start = time.perf_counter()
def peak_rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""
# Compile events of rustml_nb's kernels: inclusive seconds per (kernel, nesting depth).
PROFILER = """
import numba.core.event as _event
_stack, compiles = [], []
class _Profile(_event.Listener):
    def on_start(self, ev):
        _stack.append(time.perf_counter())
    def on_end(self, ev):
        began = _stack.pop()
        function = getattr(ev.data.get("dispatcher"), "py_func", None)
        module = getattr(function, "__module__", "") or ""
        compiles.append({"kernel": function.__qualname__ if function else str(ev.data.get("dispatcher")),
                         "ours": module.startswith("rustml_nb"), "module": module, "depth": len(_stack),
                         "seconds": time.perf_counter() - began})
_event.register("numba:compile", _Profile())
"""
PATCHTST_RUSTML = PREAMBLE + "{profiler}" + """
import pandas as pd, rustml_nb
model = rustml_nb.from_pretrained({model!r})
history = pd.read_csv({history!r}, index_col="time", parse_dates=["time"]).iloc[:model.config.context_length]
forecast = model.forecast(history)
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "peak_rss_mib": peak_rss_mib(), "first": float(forecast.iloc[0, 0]),
                  "compiles": globals().get("compiles", [])}}))
"""
PATCHTST_TORCH = PREAMBLE + """
import numpy as np, pandas as pd, torch, transformers
model = transformers.PatchTSTForPrediction.from_pretrained({model!r}).eval()
history = pd.read_csv({history!r}, index_col="time", parse_dates=["time"]).iloc[:model.config.context_length]
with torch.inference_mode():
    out = model(past_values=torch.from_numpy(history.to_numpy(np.float32))[None]).prediction_outputs
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "peak_rss_mib": peak_rss_mib(), "first": float(out[0, 0, 0])}}))
"""
MIXER_RUSTML = PREAMBLE + "{profiler}" + """
import numpy as np, rustml_nb
model = rustml_nb.from_pretrained({model!r})
out = model(np.load({history!r})).prediction_outputs
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "peak_rss_mib": peak_rss_mib(), "first": float(out[0, 0, 0]),
                  "compiles": globals().get("compiles", [])}}))
"""
MIXER_TORCH = PREAMBLE + """
import numpy as np, torch, transformers
model = transformers.PatchTSMixerForPrediction.from_pretrained({model!r}).eval()
""" + """with torch.inference_mode():
    out = model(past_values=torch.from_numpy(np.load({history!r}))).prediction_outputs
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "peak_rss_mib": peak_rss_mib(), "first": float(out[0, 0, 0])}}))
"""
# granite-tsfm's model module without its package __init__ (which imports its toolkit: datasets, scikit-learn)
TTM_TORCH = MIXER_TORCH.replace("""import numpy as np, torch, transformers
model = transformers.PatchTSMixerForPrediction.from_pretrained({model!r}).eval()
""", """import importlib.util, sys, types
import numpy as np, torch
root = importlib.util.find_spec("tsfm_public").submodule_search_locations[0]
for package, path in (("tsfm_public", root), ("tsfm_public.models", root + "/models")):
    sys.modules[package] = types.ModuleType(package)
    sys.modules[package].__path__ = [path]
from tsfm_public.models.tinytimemixer.modeling_tinytimemixer import TinyTimeMixerForPrediction
model = TinyTimeMixerForPrediction.from_pretrained({model!r}).eval()
""")
# family -> (rustml_nb script, reference script)
SCRIPTS = {"patchtst": (PATCHTST_RUSTML, PATCHTST_TORCH), "patchtsmixer": (MIXER_RUSTML, MIXER_TORCH),
           "tinytimemixer": (MIXER_RUSTML, TTM_TORCH)}
TITLES = {"patchtst": "PatchTST (the bundled demo model)",
          "patchtsmixer": "PatchTSMixer (the speed benchmark's granite shape, one series)",
          "tinytimemixer": "TinyTimeMixer (the speed benchmark's r2 512-96 shape, 7 channels; reference: granite-tsfm)"}


def family_inputs(family: str, folder: Path) -> tuple[str, str]:
    """(checkpoint folder, history file) the family's processes read."""
    from rustml_nb import demo

    if family == "patchtst":
        return str(demo.MODEL_PATH), str(demo.TEST_SLICE)
    import numpy as np
    from speed import FAMILIES  # this folder's benchmark: the same granite shape

    from rustml_nb.parity import random_reference_model

    benchmarked = FAMILIES[family]
    config = benchmarked.config
    random_reference_model(benchmarked.architecture, seed=0, reference=benchmarked.reference,
                           **config).save_pretrained(folder)
    history = folder / "history.npy"
    rng = np.random.default_rng(0)
    np.save(history, rng.normal(size=(1, config["context_length"], config["num_input_channels"])).astype(np.float32))
    return str(folder), str(history)


def run_case(script: str, inputs: tuple[str, str], cache_dir: str | None, profile: bool) -> dict:
    code = script.format(profiler=PROFILER if profile else "", model=inputs[0], history=inputs[1])
    # Python's bytecode cache as any install has it (pip compiles it at install time, an editable install
    # writes it on first import): a PYTHONDONTWRITEBYTECODE inherited from the shell would recompile
    # rustml_nb's own modules in every process, while the reference's installed packages keep theirs.
    env = {key: value for key, value in os.environ.items()
           if key not in ("NUMBA_CACHE_DIR", "PYTHONDONTWRITEBYTECODE")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", TRANSFORMERS_VERBOSITY="error")
    if cache_dir:
        env["NUMBA_CACHE_DIR"] = cache_dir
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    measured["process_wall_s"] = time.perf_counter() - began
    return measured


def compile_profile(runs: list[dict]) -> list[dict]:
    """Per rustml_nb kernel: compiles per run, and the median over runs of its inclusive and exclusive time
    (exclusive: minus the compiles it started, such as its callees')."""
    per_run = []
    for run in runs:
        events = run["compiles"]
        totals: dict[str, dict] = {}
        for i, event in enumerate(events):
            # children of an event end before it, deeper by one, and are listed before it
            children = 0.0
            for child in reversed(events[:i]):
                if child["depth"] <= event["depth"]:
                    break
                if child["depth"] == event["depth"] + 1:
                    children += child["seconds"]
            module = event.get("module", "").removeprefix("rustml_nb.")
            name = f"{module}.{event['kernel']}" if event["ours"] else f"(numba) {event['kernel'].split('.<locals>')[0]}"
            entry = totals.setdefault(name, {"compiles": 0, "inclusive_s": 0.0, "exclusive_s": 0.0, "top": 0.0})
            entry["compiles"] += 1
            entry["exclusive_s"] += event["seconds"] - children
            entry["inclusive_s"] += event["seconds"]
            if event["depth"] == 0:
                entry["top"] += event["seconds"]
        per_run.append(totals)
    names = sorted({name for totals in per_run for name in totals})
    rows = []
    for name in names:
        present = [totals.get(name, {"compiles": 0, "inclusive_s": 0.0, "exclusive_s": 0.0, "top": 0.0})
                   for totals in per_run]
        rows.append({"kernel": name, "compiles": statistics.median(p["compiles"] for p in present),
                     "inclusive_s": statistics.median(p["inclusive_s"] for p in present),
                     "exclusive_s": statistics.median(p["exclusive_s"] for p in present),
                     "called_from_python_s": statistics.median(p["top"] for p in present)})
    return sorted(rows, key=lambda row: -row["exclusive_s"])


def summarize(runs: list[dict]) -> dict:
    return {"seconds": statistics.median(r["seconds"] for r in runs),
            "process_wall_s": statistics.median(r["process_wall_s"] for r in runs),
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
            "runs": [round(r["seconds"], 3) for r in runs]}


def markdown(report: dict) -> str:
    lines = ["# The first forecast of a new process", "", report["machine"], "",
             f"Each case in fresh processes, medians of {report['repeats']} runs. Time: from the script's first line "
             "to the forecast (imports, loading, compiling or loading kernels, the forecast).", ""]
    for family, result in report["families"].items():
        cases = result["cases"]
        torch_s = cases[REFERENCE_CASE]["seconds"]
        lines += [f"## {TITLES[family]}", "",
                  "| case | import + load + forecast | × torch | process wall | peak RSS |", "|---|---|---|---|---|"]
        for label, case in cases.items():
            lines.append(f"| {label} | {case['seconds']:.2f} s | {case['seconds'] / torch_s:.2f} | "
                         f"{case['process_wall_s']:.2f} s | {case['peak_rss_mib']:.0f} MiB |")
        profile = result["compile_profile"]
        ours = [row for row in profile if not row["kernel"].startswith("(numba)")]
        numba_total = sum(row["exclusive_s"] for row in profile if row["kernel"].startswith("(numba)"))
        others = sorted({row["kernel"].split(".")[1] for row in ours if row["kernel"].startswith("models.")} - {family})
        lines += ["", f"### Compile profile (empty cache, float32)", "",
                  "Seconds each kernel takes to compile, median over the empty-cache runs: exclusive of the kernels "
                  "it calls, and inclusive (Numba compiles a callee on its own, then LLVM optimizes its code again "
                  "inside every caller that links it). Numba's own helpers (np.dot, allocation, ...) add "
                  f"{numba_total:.1f} s. Kernels of other families compiled: {', '.join(others) or 'none'}.", "",
                  "| kernel | compiles | exclusive | inclusive |", "|---|---|---|---|"]
        for row in ours:
            lines.append(f"| `{row['kernel']}` | {row['compiles']:g} | {row['exclusive_s']:.2f} s | "
                         f"{row['inclusive_s']:.2f} s |")
        total = sum(row["called_from_python_s"] for row in profile)
        lines += ["", f"All compiles started from Python: {total:.1f} s.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="processes per case (default 3)")
    args = parser.parse_args()
    import numba
    import torch

    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                         f"numba {numba.__version__}, torch {torch.__version__}"
                         + (f", OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']}"
                            if os.environ.get("OPENBLAS_CORETYPE") else ""), "repeats": args.repeats,
              "families": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for family, (ours_script, torch_script) in SCRIPTS.items():
            folder = Path(tmp) / family
            folder.mkdir()
            inputs = family_inputs(family, folder)
            runs: dict[str, list[dict]] = {"rustml_nb, empty cache (compiles)": [], "rustml_nb, warm cache": [],
                                           REFERENCE_CASE: []}
            warm = os.path.join(tmp, f"{family}-warm")
            run_case(ours_script, inputs, warm, profile=False)  # fills the warm cache
            for repeat in range(args.repeats):  # interleaved, so a slow spell of the machine hits every case
                runs["rustml_nb, empty cache (compiles)"].append(
                    run_case(ours_script, inputs, os.path.join(tmp, f"{family}-empty{repeat}"), profile=True))
                runs["rustml_nb, warm cache"].append(run_case(ours_script, inputs, warm, profile=False))
                runs[REFERENCE_CASE].append(run_case(torch_script, inputs, None, profile=False))
                print(f"{family} round {repeat + 1}: " + ", ".join(f"{label} {case[-1]['seconds']:.2f} s"
                                                                 for label, case in runs.items()), flush=True)
            report["families"][family] = {
                "cases": {label: summarize(case) for label, case in runs.items()},
                "compile_profile": compile_profile(runs["rustml_nb, empty cache (compiles)"])}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cold_start.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "cold_start.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
