"""``rustml-nb``: forecast, inspect and check parity from the command line."""

from __future__ import annotations

import argparse
import os
import sys
import traceback

import numpy as np

from . import demo
from .errors import RustmlError
from .registry import FAMILIES

DESCRIPTION = """\
Run Hugging Face time-series checkpoints (PatchTST, PatchTSMixer, TinyTimeMixer) on the CPU with Numba, at
parity with their reference implementations (transformers; granite-tsfm for TinyTimeMixer).

  rustml-nb forecast                       forecast the bundled test slice with the bundled model
  rustml-nb forecast MODEL --input x.csv   your model (folder or Hub repo id) on your data
  rustml-nb inspect MODEL                  config, detected variant, name table, parameter count
  rustml-nb parity MODEL                   compare with the reference, field by field and layer by layer
  rustml-nb compile [--dtype all]          compile every kernel into the cache now (Dockerfiles, CI images)
"""


def _load(model: str | None, dtype: str, revision: str | None):
    from .registry import from_pretrained

    return from_pretrained(model or demo.MODEL_PATH, revision=revision, dtype=dtype)


def cmd_forecast(args) -> int:
    import pandas as pd

    from .frames import check_output_path, read_table, write_table
    from .models.base import Forecaster

    if args.output:  # checked before any work: a run should not fail after the forecast is made
        check_output_path(args.output)
    if args.plot:
        check_plot_path(args.plot)
    if args.input is None and args.model is not None:
        raise RustmlError("give --input FILE (CSV or Parquet, one column per channel) to forecast with your model")
    history = read_table(args.input) if args.input else None
    model = _load(args.model, args.dtype, args.revision)
    if not isinstance(model, Forecaster):
        raise RustmlError(f"forecast needs a prediction checkpoint (a ...ForPrediction class); {args.model} is a "
                          f"{type(model).__name__}")
    actual = None
    if history is None:
        history, actual = demo.test_slice()
    extra = {}
    if args.future:
        if not model.reads_future:
            raise RustmlError("--future: this checkpoint reads no future values (it has no exogenous channels)")
        extra["future"] = read_table(args.future)
    if args.quantile:
        extra["quantiles"] = args.quantile
    if args.id_column:
        if args.plot:
            raise RustmlError("--plot draws one series; it does not go with --id-column")
        extra.update(id_columns=args.id_column, timestamp_column=args.timestamp_column, target_columns=args.target,
                     progress=sys.stderr.isatty() and not os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"))
    elif args.timestamp_column or args.target:
        raise RustmlError("--timestamp-column and --target describe a long table of many series: give --id-column too")
    forecast = model.forecast(history, freq=args.freq, pad=args.pad, **extra)
    if args.id_column:
        print(forecast.to_string(index=False, float_format=lambda v: f"{v:.2f}", max_rows=60))
        if args.output:
            write_table(forecast.set_index(list(forecast.columns[:len(args.id_column) + 1])), args.output)
            print(f"wrote {args.output}", file=sys.stderr)
        return 0
    table = forecast.add_suffix(" forecast")
    if actual is not None:
        table = pd.concat([table, actual.add_suffix(" actual").set_axis(forecast.index)], axis=1)
    print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    if actual is not None:
        mae = float(np.mean(np.abs(forecast.to_numpy() - actual.to_numpy())))
        print(f"\nmean absolute error over these {len(actual)} steps: {mae:.3f}  "
              f"(bundled model: {demo.MODEL_PATH.name}, data: Seattle and San Francisco hourly °F, 2010)")
    if args.output:
        write_table(forecast, args.output)
        print(f"wrote {args.output}", file=sys.stderr)
    if args.plot:
        plot_forecast(history, forecast, actual, args.plot, model.config.context_length, args.freq)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def check_plot_path(path) -> None:
    from pathlib import Path

    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf", ".jpg", ".jpeg"):
        raise RustmlError(f"--plot {path}: expected a .png, .svg, .pdf or .jpg file name")
    if not path.parent.is_dir():
        raise RustmlError(f"--plot {path}: the folder {path.parent} does not exist")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RustmlError("--plot needs matplotlib: pip install matplotlib") from None


def plot_forecast(history, forecast, actual, path, context_length: int, freq=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import warnings

    from .frames import regular_history

    with warnings.catch_warnings():  # forecast() has already warned about any gaps
        warnings.simplefilter("ignore")
        channels, times, _ = regular_history(history, freq)
    channels = channels.iloc[-context_length:]
    fig, axes = plt.subplots(len(forecast.columns), 1, figsize=(10, 2.6 * len(forecast.columns)), squeeze=False)
    for axis, column in zip(axes[:, 0], forecast.columns):
        if times is not None:
            locator = mdates.AutoDateLocator()
            axis.xaxis.set_major_locator(locator)
            axis.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        axis.plot(channels.index, channels[column], color="0.35", lw=1, label="history")
        if actual is not None:
            axis.plot(forecast.index, actual[column].to_numpy(), color="black", lw=1.5, label="actual")
        axis.plot(forecast.index, forecast[column], color="tab:red", lw=1.5, label="forecast")
        axis.set_title(str(column), loc="left")
        axis.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_inspect(args) -> int:
    from .bundle import load_bundle
    from .registry import family_of_config, model_class_for

    bundle = load_bundle(args.model or demo.MODEL_PATH, revision=args.revision)
    config = bundle.config
    tensors = bundle.load_tensors()
    family = family_of_config(config)
    mapping = family.map_weights(tensors)
    check = family.check_compatibility(mapping.mapped, config)
    cls = model_class_for(config, tensors, check)
    print(f"checkpoint   {bundle.weight_files[0] if bundle.onnx is not None else bundle.root}")
    if bundle.onnx is not None:
        inferred = bundle.onnx.inferred
        print("source       ONNX: weights named from the graph (never run); config " +
              (f"recovered from the graph ({', '.join(inferred)}; every other field transformers' default)"
               if inferred else "from config.json beside the file"))
        hows = {}
        for key, how in bundle.onnx.named_by.items():
            hows.setdefault(how, []).append(key)
        print("  tensors      " + "; ".join(f"{len(keys)} named by the {how}" if how in ("graph", "structure") else
                                          f"{len(keys)} {how}: {', '.join(sorted(keys))}" for how, keys in sorted(hows.items())))
    print(f"class        {cls.__name__} (architectures: {config.architectures})")
    for line in family.describe(config, cls, check):
        print(line)
    print("  config/weights disagreements  " + ("none" if not check.mismatches else
          "; ".join(f"{f}: config {w!r}, weights {h!r}" for f, w, h in check.mismatches)))
    rows = []
    parameters = buffers = 0
    for ours in sorted(mapping.mapped, key=lambda n: mapping.sources[n]):
        array = mapping.mapped[ours]
        transposed = array.ndim == 2 and ours.endswith(".weight")  # Linear weights: [out, in] -> [in, out]
        loaded = tuple(array.shape[::-1]) if transposed else tuple(array.shape)
        rows.append((mapping.sources[ours], ours, str(tuple(array.shape)), str(loaded), "yes" if transposed else "no"))
        if any(ours.endswith(s) for s in ("running_mean", "running_var", "num_batches_tracked")):
            buffers += array.size
        else:
            parameters += array.size
    rows += [(key, "(unmapped)", str(tuple(tensors[key].shape)), "", "") for key in mapping.unmapped]
    header = ("checkpoint name", "rustml_nb name", "shape", "loaded as", "transposed")
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(5)]
    print()
    for row in [header] + rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"\nparameters   {parameters:,} (+ {buffers:,} BatchNorm statistics)")
    print(f"head         {cls.head}")
    return 0


def cmd_parity(args) -> int:
    from importlib.metadata import version

    from .bundle import load_bundle
    from .parity import (REFERENCE_PACKAGES, TOLERANCE, field_differences, load_reference, reference_from_weights,
                         reference_module, reference_outputs)
    from .registry import family_of_config, model_class_for

    bundle = load_bundle(args.model or demo.MODEL_PATH, revision=args.revision)
    tensors = bundle.load_tensors()
    family = family_of_config(bundle.config)
    cls = model_class_for(bundle.config, tensors)
    distribution, install = REFERENCE_PACKAGES[family.REFERENCE.split(".")[0]]
    try:
        import torch
        module = reference_module(family.REFERENCE)
    except ImportError:
        print(f"rustml-nb parity needs torch and {distribution} as the reference: {install}", file=sys.stderr)
        return 2
    ours = cls.from_hub_weights(bundle.config, tensors, args.dtype)
    torch_dtype = torch.float64 if args.dtype == "float64" else torch.float32
    if bundle.onnx is not None:  # the reference gets the weights read out of the file
        theirs = reference_from_weights(module, cls.__name__, bundle.config.to_dict(), tensors, torch_dtype)
    else:
        theirs = load_reference(module, cls.__name__, bundle.root, torch_dtype)
    config = bundle.config
    rng = np.random.default_rng(args.seed)
    if args.input:
        from .frames import frame_to_values, read_table
        values = frame_to_values(read_table(args.input), config.context_length, ours.input_channels)[0][None]
    else:  # offsets and scales like real data, a daily-like cycle and noise
        steps = np.arange(config.context_length)[None, :, None]
        values = (rng.uniform(-20, 20, (args.batch, 1, config.num_input_channels))
                  + rng.uniform(0.5, 10, (args.batch, 1, config.num_input_channels))
                  * (np.sin(2 * np.pi * steps / 24) + rng.normal(0, 0.3, (args.batch, config.context_length, config.num_input_channels))))
    values = values.astype(args.dtype)
    observed = np.isfinite(values).astype(args.dtype)
    inputs = family.parity_inputs(config, len(values), rng) if hasattr(family, "parity_inputs") else {}
    differences = field_differences(ours(values, observed, output_hidden_states=True, **inputs),
                                    reference_outputs(theirs, np.nan_to_num(values), observed, output_hidden_states=True,
                                                      **inputs))
    tolerance = TOLERANCE[args.dtype]
    print(f"{cls.__name__} in {args.dtype}: rustml_nb against {distribution} {version(distribution)} "
          f"on {values.shape[0]} series; tolerance {tolerance:g} x (1 + max |reference|)\n")
    print(f"{'output':<28} {'max abs diff':>14} {'relative':>12}  ")
    for d in differences:
        label = d.field
        if d.field.startswith("hidden_states["):
            label = f"{family.HIDDEN_STATE} {d.field[len('hidden_states['):-1]}"
        print(f"{label:<28} {d.max_abs:>14.3g} {d.relative:>12.3g}  {'ok' if d.within(tolerance) else 'BEYOND TOLERANCE'}")
    failed = [d for d in differences if not d.within(tolerance)]
    print(f"\n{'all within tolerance' if not failed else f'{len(failed)} output(s) beyond tolerance'}")
    return 1 if failed else 0


def cmd_compile(args) -> int:
    import time

    from . import compile_kernels
    from .jit import cache_locations

    families = list(FAMILIES) if args.family == "all" else [args.family]
    start = time.perf_counter()
    compile_kernels(args.dtype, families)
    print(f"compiled the kernels of {', '.join(families)} for {args.dtype} in {time.perf_counter() - start:.1f} s; "
          f"cache: {', '.join(f'{folder} (each module __pycache__)' if label == 'package' else folder for label, folder in cache_locations())}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="rustml-nb", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"rustml-nb {__version__}")
    common = argparse.ArgumentParser(add_help=False)  # accepted before or after the command
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback on errors")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def model_arguments(sub, dtype_default="float32"):
        sub.add_argument("model", nargs="?", metavar="MODEL",
                         help="a checkpoint folder or a Hub repo id (default: the bundled demo model)")
        sub.add_argument("--revision", help="Hub branch, tag or commit")
        sub.add_argument("--dtype", choices=("float32", "float64"), default=dtype_default,
                         help=f"the precision to compute in (default {dtype_default}; float64 is for parity work)")

    forecast = commands.add_parser("forecast", parents=[common], help="forecast the next prediction_length steps",
                                   description="Forecast with a prediction checkpoint (PatchTSTForPrediction, ...). With no MODEL and no "
                                               "--input: the bundled model on its bundled test slice, next to what "
                                               "actually happened. The last context_length rows of the input are "
                                               "used (a longer history is fine); timestamps must increase, and rows "
                                               "missing from their regular grid count as missing values.")
    model_arguments(forecast)
    forecast.add_argument("--input", metavar="FILE", help="CSV or Parquet, one column per channel; a time column "
                          "(time/date/timestamp, or a first column of dates) is carried over and extended")
    forecast.add_argument("--output", metavar="FILE", help="write the forecast as .csv or .parquet")
    forecast.add_argument("--plot", metavar="FILE.png", help="draw history and forecast (needs matplotlib)")
    forecast.add_argument("--freq", metavar="FREQ", help="the input's time step as a pandas frequency (h, 15min, D, "
                          "MS); default: inferred from the timestamps")
    forecast.add_argument("--pad", action="store_true", help="accept a history shorter than the model's "
                          "context_length, its start filled with missing values")
    forecast.add_argument("--id-column", action="append", metavar="COLUMN", help="a column that tells series apart "
                          "in a long table of many series (repeat for several); one forecast per series, written long")
    forecast.add_argument("--timestamp-column", metavar="COLUMN", help="the long table's time column (default: one "
                          "named time/date/datetime/timestamp/ds)")
    forecast.add_argument("--target", action="append", metavar="COLUMN", help="a long table's channel column (repeat "
                          "for several; default: every other numeric column)")
    forecast.add_argument("--quantile", action="append", type=float, metavar="Q", help="add the predicted "
                          "distribution's Q quantile per channel (repeat; a distribution head's checkpoint)")
    forecast.add_argument("--future", metavar="FILE", help="CSV or Parquet with the known future of a TinyTimeMixer's "
                          "exogenous channels (their columns, the horizon's rows), for checkpoints with forecast "
                          "channel mixing")
    forecast.set_defaults(run=cmd_forecast)

    inspect = commands.add_parser("inspect", parents=[common],
                                  help="describe a checkpoint: config, detected variant, names, sizes")
    model_arguments(inspect)
    inspect.set_defaults(run=cmd_inspect)

    parity = commands.add_parser("parity", parents=[common], help="compare every output and layer with the reference",
                                 description="Run rustml_nb and the reference implementation (transformers; granite-tsfm "
                                             "for TinyTimeMixer) on the same input and print the largest difference of "
                                             "every output field and of every hidden state. "
                                             "Exits 1 when any is beyond tolerance (1e-9 in float64, 2e-4 in float32).")
    model_arguments(parity, dtype_default="float64")
    parity.add_argument("--input", metavar="FILE", help="CSV or Parquet to use instead of synthetic series")
    parity.add_argument("--batch", type=int, default=4, help="synthetic series to compare (default 4)")
    parity.add_argument("--seed", type=int, default=0)
    parity.set_defaults(run=cmd_parity)

    compile_ = commands.add_parser("compile", parents=[common], help="compile every kernel into the cache now",
                                   description="Compile every kernel ahead of time into the Numba cache, so that no "
                                               "later process waits for it: for Dockerfiles and CI images. The cache "
                                               "is NUMBA_CACHE_DIR when set, else the package's __pycache__ or "
                                               "~/.cache/numba, whichever can be written.")
    compile_.add_argument("--dtype", choices=("float32", "float64", "all"), default="float32",
                          help="which precision's kernels (default float32, what models load in)")
    compile_.add_argument("--family", choices=("all", *FAMILIES), default="all",
                          help="the model family (config.json's model_type; default: every family)")
    compile_.set_defaults(run=cmd_compile)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except BrokenPipeError:  # output piped into head and the like
        sys.stderr.close()
        return 0
    except (RustmlError, OSError, ValueError, KeyError, MemoryError) as error:
        if args.debug:
            traceback.print_exc()
        else:
            text = str(error).strip()
            message = text.splitlines()[0] if text else type(error).__name__
            if isinstance(error, MemoryError):
                message = f"out of memory ({message}); use a smaller --input"
            print(f"rustml-nb {args.command}: error: {message}  (--debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
