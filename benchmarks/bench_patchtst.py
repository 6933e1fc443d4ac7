"""rustml_nb against transformers (eager PyTorch) and ONNX Runtime, interleaved in one process.

    pip install -e ".[bench]" && python benchmarks/bench_patchtst.py          # ~5 minutes on 2 cores
    python benchmarks/bench_patchtst.py --quick                              # fewer rounds, no scaling runs

The first forecast of a new process (compiling, or loading compiled kernels) is benchmarks/cold_start.py's.

The model is a PatchTSTForPrediction shaped like ibm-granite/granite-timeseries-patchtst (7 channels,
context 512, patch 12 stride 12, d_model 128, 16 heads, 3 layers, ffn 512, mean pooling, horizon 96)
with random weights and random BatchNorm statistics. Writes benchmarks/results/latest.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GRANITE = dict(num_input_channels=7, context_length=512, patch_length=12, patch_stride=12, d_model=128,
               num_attention_heads=16, num_hidden_layers=3, ffn_dim=512, pooling_type="mean", prediction_length=96)
RESULTS = Path(__file__).resolve().parent / "results"
# torch's OpenMP workers and ONNX Runtime's intra-op threads spin for a while after a call; on 2 cores
# that steals time from whichever engine runs next. A pause before each engine's block lets them go idle,
# so every engine is timed on its own (each still keeps its own threads warm within its block).
SETTLE_SECONDS = 0.2


def forward_flops(config: dict, batch: int) -> float:
    """Multiply-adds x 2 of one forward pass: embedding, attention (projections and scores), FFN, head."""
    series = batch * config["num_input_channels"]
    patches = (config["context_length"] - config["patch_length"]) // config["patch_stride"] + 1
    d, f = config["d_model"], config["ffn_dim"]
    rows = series * patches
    per_layer = rows * (4 * d * d + 2 * d * f) + series * 2 * patches * patches * d
    embed = rows * config["patch_length"] * d
    head = series * d * config["prediction_length"]
    return 2.0 * (embed + config["num_hidden_layers"] * per_layer + head)


def gemm_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 GEMM rate through NumPy's BLAS, best of a few runs."""
    a = np.random.rand(size, size).astype(np.float32)
    b = np.random.rand(size, size).astype(np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def build_engines(config: dict, folder: Path):
    """rustml_nb, transformers eager and ONNX Runtime on one random checkpoint."""
    import onnxruntime
    import torch

    import rustml_nb
    from rustml_nb.parity import random_reference_model

    reference = random_reference_model("PatchTSTForPrediction", seed=0, **config)
    reference.save_pretrained(folder)
    ours = rustml_nb.from_pretrained(folder, dtype="float32")

    class Forecast(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, past_values):
            return self.model(past_values=past_values).prediction_outputs

    example = torch.zeros(2, config["context_length"], config["num_input_channels"])
    onnx_path = folder / "model.onnx"
    torch.onnx.export(Forecast(reference), (example,), onnx_path, dynamo=True, input_names=["past_values"],
                      output_names=["prediction_outputs"],
                      dynamic_shapes={"past_values": {0: torch.export.Dim("batch", min=1, max=4096)}},
                      verbose=False)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def run_torch(x):
        with torch.inference_mode():
            return reference(past_values=torch.from_numpy(x)).prediction_outputs.numpy()

    return ours, {
        "rustml_nb": lambda x: ours(x).prediction_outputs,
        "torch": run_torch,
        "onnxruntime": lambda x: session.run(None, {"past_values": x})[0],
    }


def measure(engines: dict, config: dict, batch: int, rounds: int, peak: float) -> dict:
    rng = np.random.default_rng(batch)
    x = (rng.uniform(-20, 20, (batch, 1, config["num_input_channels"]))
         + rng.normal(0, 3, (batch, config["context_length"], config["num_input_channels"]))).astype(np.float32)
    outputs = {name: run(x) for name, run in engines.items()}  # warm-up, and the agreement check
    reference = outputs["torch"]
    agreement = {name: float(np.abs(out - reference).max() / (1 + np.abs(reference).max()))
                 for name, out in outputs.items()}
    from rustml_nb.parity import TOLERANCE  # the float32 parity bound, relative to 1 + max |reference|
    disagreeing = {name: difference for name, difference in agreement.items()
                   if not difference <= TOLERANCE["float32"]}
    if disagreeing:  # timing engines that compute different things would compare nothing
        raise SystemExit(f"batch {batch}: forecasts differ from torch's by more than {TOLERANCE['float32']} of "
                         f"1 + max |forecast|: {disagreeing}")
    calls = max(1, 32 // batch)
    times = {name: [] for name in engines}
    for r in range(rounds):  # interleaved, rotating the order so no engine always runs first
        names = list(engines)
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(SETTLE_SECONDS)
            start = time.perf_counter()
            for _ in range(calls):
                engines[name](x)
            times[name].append((time.perf_counter() - start) / calls)
    flops = forward_flops(config, batch)
    result = {"batch": batch, "gflop_per_forward": flops / 1e9, "engines": {}}
    for name, samples in times.items():
        median = float(np.median(samples))
        result["engines"][name] = {
            "median_ms": median * 1e3, "series_per_s": batch / median, "gflops": flops / median / 1e9,
            "fraction_of_peak": flops / median / 1e9 / peak, "max_relative_difference_to_torch": agreement[name]}
    ours = result["engines"]["rustml_nb"]["median_ms"]
    result["speedup_vs_torch"] = result["engines"]["torch"]["median_ms"] / ours
    result["speedup_vs_onnxruntime"] = result["engines"]["onnxruntime"]["median_ms"] / ours
    return result


def concurrency(model, config: dict, calls: int = 16, threads: int = 4, batch: int = 8, rounds: int = 5) -> dict:
    """One model object called from several threads at once against the same calls one after another:
    the threads share the kernels' workers, so together they should take about as long, not longer."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(1)
    inputs = [(rng.uniform(-20, 20, (batch, 1, config["num_input_channels"]))
               + rng.normal(0, 3, (batch, config["context_length"], config["num_input_channels"]))).astype(np.float32)
              for _ in range(calls)]
    alone = [model(x).prediction_outputs for x in inputs]
    sequential, concurrent = [], []
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(rounds):
            start = time.perf_counter()
            for x in inputs:
                model(x)
            sequential.append(time.perf_counter() - start)
            start = time.perf_counter()
            together = list(pool.map(lambda x: model(x).prediction_outputs, inputs))
            concurrent.append(time.perf_counter() - start)
    assert all(np.array_equal(a, b) for a, b in zip(alone, together)), "concurrent calls differ from calls alone"
    return {"calls": calls, "threads": threads, "batch": batch, "sequential_s": float(np.median(sequential)),
            "concurrent_s": float(np.median(concurrent)),
            "ratio": float(np.median(concurrent) / np.median(sequential))}


def markdown(report: dict) -> str:
    lines = [f"# PatchTST on the CPU: rustml_nb vs transformers vs ONNX Runtime",
             "", f"{report['machine']}; float32 GEMM peak measured in the same run: "
             f"{report['gemm_peak_gflops']:.0f} GFLOP/s.", ""]
    for title, rows in (("Granite-shaped model", report["granite"]), ("Scaling", report.get("scaling", []))):
        if not rows:
            continue
        lines += [f"## {title}", "",
                  "| shape | batch | engine | median ms | series/s | GFLOP/s | % of peak | vs torch | vs ORT "
                  "| differs from torch by |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for row in rows:
            for name, e in row["engines"].items():
                ratio_torch = row["engines"]["torch"]["median_ms"] / e["median_ms"]
                ratio_ort = row["engines"]["onnxruntime"]["median_ms"] / e["median_ms"]
                lines.append(f"| {row.get('shape', 'granite')} | {row['batch']} | {name} | {e['median_ms']:.2f} | "
                             f"{e['series_per_s']:.0f} | {e['gflops']:.1f} | {100 * e['fraction_of_peak']:.0f}% | "
                             f"{ratio_torch:.2f}x | {ratio_ort:.2f}x | "
                             f"{e['max_relative_difference_to_torch']:.1e} |")
        lines.append("")
    if report.get("concurrency"):
        c = report["concurrency"]
        lines += ["## One model, several threads", "",
                  f"{c['calls']} calls of batch {c['batch']} on one rustml_nb model: one after another "
                  f"{c['sequential_s'] * 1e3:.0f} ms, from {c['threads']} threads at once {c['concurrent_s'] * 1e3:.0f} ms "
                  f"({c['ratio']:.2f}x); every concurrent result equal, bit for bit, to the same call made alone.",
                  ""]
    lines.append("Ratios are engine time / rustml_nb time per forward (above 1: rustml_nb is faster). The last "
                 "column is the largest difference from torch's forecast, relative to 1 + its largest magnitude; "
                 "the run stops if any exceeds the float32 parity bound (2e-4). GFLOP/s "
                 "counts every engine against the model's nominal FLOPs; with this mean-pooled head rustml_nb "
                 "skips most of the last layer's second feed-forward Linear (about 10% of them), so for it the "
                 "column is a throughput, not its arithmetic rate.")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["granite"]
    engines = list(rows[0]["engines"])
    fig, axis = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(engines)
    for i, name in enumerate(engines):
        axis.bar(np.arange(len(rows)) + i * width, [r["engines"][name]["series_per_s"] for r in rows], width,
                 label=name)
    axis.set_xticks(np.arange(len(rows)) + width * (len(engines) - 1) / 2, [f"batch {r['batch']}" for r in rows])
    axis.set_ylabel("series per second (higher is better)")
    axis.set_title("PatchTST (granite shape), float32, " + report["machine"], fontsize=9)
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 rounds, no scaling runs")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    import threadpoolctl
    import torch

    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
                         f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
              "blas": [{k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                       for i in threadpoolctl.threadpool_info()],
              "gemm_peak_gflops": gemm_peak_gflops()}
    print(f"GEMM peak {report['gemm_peak_gflops']:.0f} GFLOP/s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "granite"
        model, engines = build_engines(GRANITE, folder)
        report["granite"] = []
        for batch in (1, 8, 64, 256):
            row = measure(engines, GRANITE, batch, rounds, report["gemm_peak_gflops"])
            report["granite"].append(row)
            print(f"batch {batch}: " + ", ".join(f"{n} {e['median_ms']:.2f} ms" for n, e in row["engines"].items())
                  + f"; rustml_nb {row['speedup_vs_torch']:.2f}x torch, {row['speedup_vs_onnxruntime']:.2f}x ORT",
                  flush=True)
        report["concurrency"] = concurrency(model, GRANITE)
        print(f"concurrency: {report['concurrency']['ratio']:.2f}x the sequential time", flush=True)
        if not args.quick:
            report["scaling"] = []
            for shape, overrides, batch in (("context 2048", {"context_length": 2048}, 8),
                                            ("321 channels", {"num_input_channels": 321}, 8)):
                config = {**GRANITE, **overrides}
                row = measure(build_engines(config, Path(tmp) / shape.replace(" ", "_"))[1], config, batch,
                              max(3, rounds // 2), report["gemm_peak_gflops"])
                row["shape"] = shape
                report["scaling"].append(row)
                print(f"{shape}, batch {batch}: rustml_nb {row['speedup_vs_torch']:.2f}x torch, "
                      f"{row['speedup_vs_onnxruntime']:.2f}x ORT", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "latest.md").write_text(markdown(report))
    plot(report, RESULTS / "latest.png")
    print(markdown(report))


if __name__ == "__main__":
    main()
