"""rustml_nb against the reference in eager PyTorch (transformers; granite-tsfm for TinyTimeMixer) and ONNX
Runtime, interleaved in one process, for every model family: the same rules, one run, one report.

    pip install -e ".[bench]" && python benchmarks/speed.py            # ~10 minutes on 2 cores
    python benchmarks/speed.py --family patchtsmixer --quick             # one family, fewer rounds, no files

The first forecast of a new process (compiling, or loading compiled kernels) is benchmarks/cold_start.py's.

Each family's model is a ...ForPrediction with random weights and random BatchNorm statistics, shaped like
its granite checkpoint on the Hub (see FAMILIES). A full run writes benchmarks/results/speed.{json,md,png}.
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
from typing import Callable, NamedTuple

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
# torch's OpenMP workers and ONNX Runtime's intra-op threads spin for a while after a call; on 2 cores
# that steals time from whichever engine runs next. A pause before each engine's block lets them go idle,
# so every engine is timed on its own. After a pause every engine runs slower for a while (rustml_nb's
# batch-1 calls ~1.7x for the first ~30 ms on the benchmark machine), so each block starts with untimed
# calls for WARM_SECONDS: what is timed is each engine's steady state.
SETTLE_SECONDS = 0.2
WARM_SECONDS = 0.1


def patchtst_flops(config: dict, batch: int) -> float:
    """Multiply-adds x 2 of one forward pass: embedding, attention (projections and scores), FFN, head."""
    series = batch * config["num_input_channels"]
    patches = (config["context_length"] - config["patch_length"]) // config["patch_stride"] + 1
    d, f = config["d_model"], config["ffn_dim"]
    rows = series * patches
    per_layer = rows * (4 * d * d + 2 * d * f) + series * 2 * patches * patches * d
    embed = rows * config["patch_length"] * d
    head = series * d * config["prediction_length"]
    return 2.0 * (embed + config["num_hidden_layers"] * per_layer + head)


def patchtsmixer_flops(config: dict, batch: int) -> float:
    """Multiply-adds x 2 of one forward pass: embedding; per layer the MLPs (and gates) across patches and
    features (and channels, in mix_channel mode) and the optional self-attention; the flatten head."""
    channels, d, expansion = config["num_input_channels"], config["d_model"], config.get("expansion_factor", 2)
    series = batch * channels
    patches = (config["context_length"] - config["patch_length"]) // config["patch_stride"] + 1
    rows = series * patches
    gate = 1 if config.get("gated_attn", True) else 0

    def mlp(width):  # Linear width -> width * expansion -> width, and the gate's width x width
        return 2 * width * width * expansion + gate * width * width

    per_layer = series * d * mlp(patches) + rows * mlp(d)
    if config.get("mode", "common_channel") == "mix_channel":
        per_layer += batch * patches * d * mlp(channels)
    if config.get("self_attn", False):
        per_layer += rows * 4 * d * d + series * 2 * patches * patches * d
    embed = rows * config["patch_length"] * d
    head = series * patches * d * config["prediction_length"]
    return 2.0 * (embed + config["num_layers"] * per_layer + head)


def tinytimemixer_flops(config: dict, batch: int) -> float:
    """Multiply-adds x 2 of one forward pass: the patcher; each adaptive level of encoder and decoder (a level
    of factor f mixes tokens * f rows of width / f: MLPs and gates across tokens and features); the decoder's
    adapter; the flatten head."""
    series = batch * config["num_input_channels"]
    tokens = (config["context_length"] - config["patch_length"]) // config["patch_stride"] + 1
    expansion, gate = config.get("expansion_factor", 2), 1 if config.get("gated_attn", True) else 0

    def mlp(width):  # Linear width -> width * expansion -> width, and the gate's width x width
        return 2 * width * width * expansion + gate * width * width

    def stack(d_model, levels, layers):
        factors = [2 ** level if d_model // 2 ** level > 4 else 1 for level in range(levels)] or [1]
        return sum(layers * series * ((d_model // f) * mlp(tokens * f) + tokens * f * mlp(d_model // f))
                   for f in factors)

    d, decoder_d = config["d_model"], config["decoder_d_model"]
    embed = series * tokens * config["patch_length"] * d
    adapter = series * tokens * d * decoder_d if d != decoder_d else 0
    head = series * tokens * decoder_d * config["prediction_length"]
    return 2.0 * (embed + stack(d, config.get("adaptive_patching_levels", 0), config["num_layers"]) + adapter
                  + stack(decoder_d, config.get("decoder_adaptive_patching_levels", 0), config["decoder_num_layers"])
                  + head)


class Family(NamedTuple):
    title: str
    architecture: str  # the reference class benchmarked
    shape: str  # what the model is shaped like, for the report
    config: dict
    flops: Callable[[dict, int], float]
    batches: tuple
    scaling: tuple  # (label, config overrides, batch)
    note: str = ""
    reference: str = "transformers"  # the module holding the reference class (rustml_nb.parity.reference_module)


FAMILIES = {
    "patchtst": Family(
        "PatchTST", "PatchTSTForPrediction",
        "shaped like ibm-granite/granite-timeseries-patchtst: 7 channels, context 512, patch 12 stride 12, "
        "d_model 128, 16 heads, 3 layers, ffn 512, mean pooling, horizon 96",
        dict(num_input_channels=7, context_length=512, patch_length=12, patch_stride=12, d_model=128,
             num_attention_heads=16, num_hidden_layers=3, ffn_dim=512, pooling_type="mean", prediction_length=96),
        patchtst_flops, (1, 8, 64, 256),
        (("context 2048", {"context_length": 2048}, 8), ("321 channels", {"num_input_channels": 321}, 8)),
        "With this mean-pooled head rustml_nb skips most of the last layer's second feed-forward Linear (about "
        "10% of the FLOPs), so for it the GFLOP/s column is a throughput, not its arithmetic rate."),
    "patchtsmixer": Family(
        "PatchTSMixer", "PatchTSMixerForPrediction",
        "the dimensions of ibm-granite/granite-timeseries-patchtsmixer (ETTh1: 7 channels, context 512, patch 8 "
        "stride 8, horizon 96) with d_model 16, 8 layers, expansion 2, gated attention, common channel, std "
        "scaling",
        dict(num_input_channels=7, context_length=512, patch_length=8, patch_stride=8, d_model=16, num_layers=8,
             expansion_factor=2, gated_attn=True, mode="common_channel", scaling="std", prediction_length=96),
        patchtsmixer_flops, (1, 8, 64, 256),
        (("d_model 48, 3 layers, expansion 3", {"d_model": 48, "num_layers": 3, "expansion_factor": 3}, 1),
         ("d_model 48, 3 layers, expansion 3", {"d_model": 48, "num_layers": 3, "expansion_factor": 3}, 64),
         ("mix_channel", {"mode": "mix_channel"}, 64)),
        "The wider shape is the from-scratch configuration of granite-tsfm's PatchTSMixer getting-started "
        "notebook."),
    "tinytimemixer": Family(
        "TinyTimeMixer", "TinyTimeMixerForPrediction",
        "shaped like ibm-granite/granite-timeseries-ttm-r2 (512-96): context 512, patch 64, d_model 192, 2 layers, "
        "3 adaptive patching levels, a decoder of d_model 128 and 2 layers, gated attention, common channel, std "
        "scaling (805,280 parameters); 7 channels, as ETTh1",
        dict(num_input_channels=7, context_length=512, patch_length=64, patch_stride=64, d_model=192, num_layers=2,
             adaptive_patching_levels=3, decoder_d_model=128, decoder_num_layers=2, expansion_factor=2,
             gated_attn=True, mode="common_channel", decoder_mode="common_channel", scaling="std",
             prediction_length=96),
        tinytimemixer_flops, (1, 8, 64, 256),
        (("context 1536, patch 128", {"context_length": 1536, "patch_length": 128, "patch_stride": 128},
          64),),
        "The reference is granite-tsfm 0.3.11's TinyTimeMixerForPrediction.", "tsfm_public.models.tinytimemixer."
        "modeling_tinytimemixer"),
}


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


def build_engines(family: Family, config: dict, folder: Path):
    """rustml_nb, transformers eager and ONNX Runtime on one random checkpoint."""
    import onnxruntime
    import torch

    import rustml_nb
    from rustml_nb.parity import random_reference_model

    reference = random_reference_model(family.architecture, seed=0, reference=family.reference, **config)
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


def measure(engines: dict, family: Family, config: dict, batch: int, rounds: int, peak: float) -> dict:
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
            warm_until = time.perf_counter() + WARM_SECONDS
            while True:
                engines[name](x)
                if time.perf_counter() >= warm_until:
                    break
            start = time.perf_counter()
            for _ in range(calls):
                engines[name](x)
            times[name].append((time.perf_counter() - start) / calls)
    flops = family.flops(config, batch)
    result = {"batch": batch, "gflop_per_forward": flops / 1e9, "engines": {}}
    for name, samples in times.items():
        median = float(np.median(samples))
        result["engines"][name] = {
            "median_ms": median * 1e3, "series_per_s": batch / median, "gflops": flops / median / 1e9,
            "fraction_of_peak": flops / median / 1e9 / peak, "max_relative_difference_to_torch": agreement[name],
            "rounds_ms": [t * 1e3 for t in samples],
            "vs_torch": paired_ratio(times["torch"], samples),
            "vs_onnxruntime": paired_ratio(times["onnxruntime"], samples)}
    result["speedup_vs_torch"] = result["engines"]["rustml_nb"]["vs_torch"]
    result["speedup_vs_onnxruntime"] = result["engines"]["rustml_nb"]["vs_onnxruntime"]
    ours = result["engines"]["rustml_nb"]["median_ms"]  # for comparison with the paired ratios
    result["medians_vs_torch"] = result["engines"]["torch"]["median_ms"] / ours
    result["medians_vs_onnxruntime"] = result["engines"]["onnxruntime"]["median_ms"] / ours
    return result


def paired_ratio(other: list, ours: list) -> float:
    """The median over rounds of other's time / ours in the same round. The engines of a round run within a
    second or two of each other, so each round's ratio compares them in the same state of the machine; the
    ratio of the two medians can compare one engine's slow state with the other's fast one when the machine
    changes speed during a run (and its speed changes cost the engines unequally)."""
    return float(np.median(np.asarray(other) / np.asarray(ours)))


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


def blas_kernels(report: dict) -> str:
    """Each OpenBLAS loaded in the process and its kernels (NumPy's measures the GEMM peak). rustml_nb calls
    none: its matrix products are its own (kernels.gemm)."""
    found = []
    for library in report["blas"]:
        if library.get("internal_api") == "openblas":
            owner = "SciPy" if "scipy" in Path(library["filepath"]).parent.name else "NumPy"
            found.append(f"{owner}'s OpenBLAS {library['version']} ({library['architecture']} kernels)")
    return ", ".join(found)


def markdown(report: dict) -> str:
    lines = ["# rustml_nb vs transformers vs ONNX Runtime on the CPU", "",
             f"{report['machine']}; float32 GEMM peak measured in the same run: {report['gemm_peak_gflops']:.0f} GFLOP/s; "
             f"{report['blas_kernels']}.", ""]
    for key, result in report["families"].items():
        family = FAMILIES[key]
        lines += [f"## {family.title}", "", f"`{family.architecture}`, {family.shape}.", ""]
        for title, rows in (("Granite-shaped model", result["granite"]), ("Other shapes", result.get("scaling", []))):
            if not rows:
                continue
            lines += [f"### {title}", "",
                      "| shape | batch | engine | median ms | series/s | GFLOP/s | % of peak | vs torch | vs ORT "
                      "| differs from torch by |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for row in rows:
                for name, e in row["engines"].items():
                    ratio_torch, ratio_ort = e["vs_torch"], e["vs_onnxruntime"]
                    lines.append(f"| {row.get('shape', 'granite')} | {row['batch']} | {name} | {e['median_ms']:.2f} | "
                                 f"{e['series_per_s']:.0f} | {e['gflops']:.1f} | {100 * e['fraction_of_peak']:.0f}% | "
                                 f"{ratio_torch:.2f}x | {ratio_ort:.2f}x | "
                                 f"{e['max_relative_difference_to_torch']:.1e} |")
            lines.append("")
        if result.get("concurrency"):
            c = result["concurrency"]
            lines += ["### One model, several threads", "",
                      f"{c['calls']} calls of batch {c['batch']} on one rustml_nb model: one after another "
                      f"{c['sequential_s'] * 1e3:.0f} ms, from {c['threads']} threads at once "
                      f"{c['concurrent_s'] * 1e3:.0f} ms ({c['ratio']:.2f}x); every concurrent result equal, bit for "
                      "bit, to the same call made alone.", ""]
        if family.note:
            lines += [family.note, ""]
    lines.append("Ratios are the other engine's time / this engine's, each round's (the engines timed one after "
                 "another), their median over the rounds (vs torch above 1: faster than torch). The last "
                 "column is the largest difference from torch's forecast, relative to 1 + its largest magnitude; "
                 "the run stops if any exceeds the float32 parity bound (2e-4). GFLOP/s counts every engine "
                 "against the model's nominal FLOPs.")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = report["families"]
    fig, axes = plt.subplots(1, len(families), figsize=(5 * len(families), 4), squeeze=False)
    for axis, (key, result) in zip(axes[0], families.items()):
        rows = result["granite"]
        engines = list(rows[0]["engines"])
        width = 0.8 / len(engines)
        for i, name in enumerate(engines):
            axis.bar(np.arange(len(rows)) + i * width, [r["engines"][name]["series_per_s"] for r in rows], width,
                     label=name)
        axis.set_xticks(np.arange(len(rows)) + width * (len(engines) - 1) / 2, [f"batch {r['batch']}" for r in rows])
        axis.set_ylabel("series per second (higher is better)")
        axis.set_title(f"{FAMILIES[key].title} (granite shape), float32", fontsize=10)
        axis.legend()
    fig.suptitle(report["machine"], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_family(family: Family, rounds: int, quick: bool, peak: float, folder: Path, with_concurrency: bool) -> dict:
    model, engines = build_engines(family, family.config, folder / "granite")
    result = {"config": family.config, "granite": []}
    for batch in family.batches:
        row = measure(engines, family, family.config, batch, rounds, peak)
        result["granite"].append(row)
        print(f"{family.title} batch {batch}: " + ", ".join(f"{n} {e['median_ms']:.2f} ms"
                                                          for n, e in row["engines"].items())
              + f"; rustml_nb {row['speedup_vs_torch']:.2f}x torch, {row['speedup_vs_onnxruntime']:.2f}x ORT (ratio of the "
              f"medians {row['medians_vs_torch']:.2f}x, {row['medians_vs_onnxruntime']:.2f}x)", flush=True)
    if with_concurrency:
        result["concurrency"] = concurrency(model, family.config)
        print(f"concurrency: {result['concurrency']['ratio']:.2f}x the sequential time", flush=True)
    if not quick:
        result["scaling"] = []
        for index, (shape, overrides, batch) in enumerate(family.scaling):
            config = {**family.config, **overrides}
            row = measure(build_engines(family, config, folder / f"shape{index}")[1], family, config, batch,
                          max(3, rounds // 2), peak)
            row["shape"] = shape
            result["scaling"].append(row)
            print(f"{family.title} {shape}, batch {batch}: rustml_nb {row['speedup_vs_torch']:.2f}x torch, "
                  f"{row['speedup_vs_onnxruntime']:.2f}x ORT", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=sorted(FAMILIES), action="append",
                        help="only this family (repeatable); the report is printed, no files are written")
    parser.add_argument("--quick", action="store_true", help="3 rounds, no other shapes, no files written")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    import threadpoolctl
    import torch

    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
                         f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
              "blas": [{k: i.get(k) for k in ("filepath", "internal_api", "version", "architecture", "num_threads")}
                       for i in threadpoolctl.threadpool_info()],
              "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
              "gemm_peak_gflops": gemm_peak_gflops(), "families": {}}
    report["blas_kernels"] = blas_kernels(report)
    if report["openblas_coretype"]:
        print(f"OPENBLAS_CORETYPE={report['openblas_coretype']} is set: the GEMM peak is measured with those "
              "OpenBLAS kernels, not the ones it would choose for this CPU", file=sys.stderr, flush=True)
    print(f"GEMM peak {report['gemm_peak_gflops']:.0f} GFLOP/s; {report['blas_kernels']}", flush=True)
    chosen = args.family or list(FAMILIES)
    with tempfile.TemporaryDirectory() as tmp:
        for index, key in enumerate(chosen):
            report["families"][key] = run_family(FAMILIES[key], rounds, args.quick, report["gemm_peak_gflops"],
                                                 Path(tmp) / key, with_concurrency=index == 0)
    if args.family is None and not args.quick:  # the committed report is always one whole run
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "speed.json").write_text(json.dumps(report, indent=2) + "\n")
        (RESULTS / "speed.md").write_text(markdown(report))
        plot(report, RESULTS / "speed.png")
    print(markdown(report))


if __name__ == "__main__":
    main()
