"""rustml_nb's matrix product (kernels.gemm.matmul) against NumPy's BLAS on one core, on the models' shapes,
with the weight as it is and packed (kernels.gemm.pack_weight, as the mixers hold their MLPs' and gates').

    python benchmarks/gemm.py          # ~1 minute; writes benchmarks/results/gemm.md

    # the AVX2 code on a CPU with AVX-512 (Numba told the CPU has AVX2 only, OpenBLAS's AVX2 kernels):
    NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=+avx,+avx2,+fma,+sse4.2,+popcnt,+f16c,+bmi,+bmi2 \
        OPENBLAS_CORETYPE=Haswell python benchmarks/gemm.py          # writes results/gemm-haswell.md

Each shape is [rows, inner] @ [inner, outputs], both dtypes, best of 7 rounds of 20 calls, BLAS held at one
thread (as each of rustml_nb's threads runs its own share). The shapes are the granite-shaped models' own
at one thread's block (PatchTSMixer 2048 rows, PatchTST 512, TinyTimeMixer 256 at d_model 192) and at batch 1
(a few series' rows).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
import threadpoolctl

from rustml_nb.kernels.gemm import matmul, pack_weight

SHAPES = [  # (rows, inner, outputs, where)
    (2048, 16, 32, "PatchTSMixer: across features, fc1"),
    (512, 64, 128, "PatchTSMixer: across patches, fc1"),
    (512, 128, 64, "PatchTSMixer: across patches, fc2"),
    (512, 128, 384, "PatchTST: QKV"),
    (512, 128, 512, "PatchTST: feed-forward 1"),
    (512, 512, 128, "PatchTST: feed-forward 2"),
    (256, 192, 384, "TinyTimeMixer: across features, fc1"),
    (32, 192, 384, "TinyTimeMixer batch 1: across features, fc1 (4 series)"),
    (256, 8, 16, "TinyTimeMixer: across 8 patches, fc1"),
    (7, 5376, 96, "PatchTST batch 1: the forecast head"),
]


def rate(function, flops):
    best = float("inf")
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(20):
            function()
        best = min(best, (time.perf_counter() - start) / 20)
    return flops / best / 1e9


def main():
    rng = np.random.default_rng(0)
    blas = ", ".join(f"{info['internal_api']} {info.get('version')} ({info.get('architecture')})"
                     for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas")
    cpu = os.environ.get("NUMBA_CPU_NAME")
    compiled_for = f"compiled for {cpu} ({os.environ.get('NUMBA_CPU_FEATURES')})" if cpu else "compiled for this CPU"
    lines = ["# rustml_nb's matmul against NumPy's BLAS, one core", "",
             f"{platform.machine()}; rustml_nb {compiled_for}; NumPy's BLAS: {blas}. GFLOP/s, best of 7 rounds "
             "of 20 calls.", "",
             "| shape | used for | float32 rustml_nb | packed | float32 BLAS "
             "| float64 rustml_nb | packed | float64 BLAS |",
             "|---|---|---|---|---|---|---|---|"]
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        for rows, inner, outputs, where in SHAPES:
            cells = []
            for dtype in (np.float32, np.float64):
                a = rng.standard_normal((rows, inner)).astype(dtype)
                w = rng.standard_normal((inner, outputs)).astype(dtype)
                ours, theirs = np.empty((rows, outputs), dtype), np.empty((rows, outputs), dtype)
                packed = pack_weight(w)
                matmul(a, w, ours)
                matmul(a, packed, ours)
                flops = 2 * rows * inner * outputs
                cells += [rate(lambda: matmul(a, w, ours), flops), rate(lambda: matmul(a, packed, ours), flops),
                          rate(lambda: np.dot(a, w, theirs), flops)]
            lines.append(f"| {rows} × {inner} @ {inner} × {outputs} | {where} | "
                         + " | ".join(f"{value:.0f}" for value in cells) + " |")
            print(lines[-1], flush=True)
    out = Path(__file__).resolve().parent / "results" / (f"gemm-{cpu}.md" if cpu else "gemm.md")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
