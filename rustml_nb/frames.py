"""pandas in and out: a DataFrame of channels -> the model's input; a forecast -> a DataFrame indexed by
the future. Also reading and writing CSV/Parquet for the CLI.

A history's time axis (a DatetimeIndex, or a time column) is checked and put on a regular grid before
anything is computed: timestamps must be increasing, unique and present; the step is the one pandas
infers, or the most common step when some rows are missing (the missing rows are then inserted as missing
values, with a warning), or the ``freq`` the caller gives. Timestamps of any resolution and time zone are
handled as timestamps (never as integers), so the future is labelled at the history's own step.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .errors import InputError, MissingFileError, RustmlWarning

TIME_COLUMNS = ("time", "date", "datetime", "timestamp", "ds")
READABLE = (".csv", ".txt", ".parquet", ".pq")


def _pandas():
    import pandas

    return pandas


def _as_times(values, name):
    """A DatetimeIndex from a column or index; unparsable values are an InputError naming the column."""
    pd = _pandas()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "could not infer format": parsed element by element
            return pd.DatetimeIndex(pd.to_datetime(values), name=name)
    except (ValueError, TypeError, OverflowError) as error:
        raise InputError(f"column {name!r} could not be read as timestamps: {str(error).splitlines()[0]}") from None


def split_time(frame):
    """(frame of channels, time index or None): a DatetimeIndex, or a column named like a time, or a
    first column that parses as dates, is taken as the time axis."""
    pd = _pandas()
    if isinstance(frame.index, pd.DatetimeIndex):
        return frame, frame.index
    for column in frame.columns:
        if str(column).lower() in TIME_COLUMNS:
            return frame.drop(columns=[column]), _as_times(frame[column], column)
    first = frame.columns[0] if len(frame.columns) else None
    if first is not None and not pd.api.types.is_numeric_dtype(frame[first]):
        try:
            times = _as_times(frame[first], first)
        except InputError:
            return frame, None
        return frame.drop(columns=[first]), times
    return frame, None


def _infer_step(times):
    """The series' step as a pandas offset or Timedelta, or None when it cannot be told."""
    pd = _pandas()
    if len(times) >= 3:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas 3 announces that infer_freq will return an offset
            inferred = pd.infer_freq(times)
        if inferred:
            return pd.tseries.frequencies.to_offset(inferred)
    if len(times) < 2:
        return None
    steps = pd.Series(times[1:] - times[:-1])
    common = steps.mode().iloc[0]
    if common <= pd.Timedelta(0) or (steps % common != pd.Timedelta(0)).any():
        return None  # steps that are not multiples of the commonest one: irregular
    return pd.tseries.frequencies.to_offset(common)


def regular_history(frame, freq=None):
    """(channels DataFrame on a regular grid, its DatetimeIndex or None, the step or None).

    Checks the time axis (increasing, unique, no NaT), infers the step (or takes ``freq``) and inserts the
    grid's missing rows as NaN, warning how many. Without a time axis the rows are taken as they are."""
    pd = _pandas()
    channels, times = split_time(frame)
    if times is None:
        return channels, None, None
    if times.isna().any():
        row = int(np.flatnonzero(times.isna())[0])
        raise InputError(f"row {row} of the history has no timestamp (NaT); drop it or give it its time")
    if len(times) > 1:
        steps = times[1:] - times[:-1]
        bad = np.flatnonzero(np.asarray(steps <= pd.Timedelta(0)))
        if len(bad):
            row = int(bad[0]) + 1
            what = "repeats the timestamp of" if times[row] == times[row - 1] else "comes before"
            raise InputError(f"row {row} of the history ({times[row]}) {what} row {row - 1} ({times[row - 1]}): "
                             "timestamps must be increasing and unique; sort the history and drop duplicates")
    if freq is not None:
        try:
            step = pd.tseries.frequencies.to_offset(freq)
        except (ValueError, TypeError):
            raise InputError(f"freq={freq!r} is not a pandas frequency (such as 'h', '15min', 'D', 'MS')") from None
    else:
        step = _infer_step(times)
        if step is None:
            raise InputError(f"cannot infer the time step of the history ({len(times)} rows from {times[0]} to "
                             f"{times[-1]} at irregular intervals); pass freq=, e.g. forecast(history, freq='h') "
                             "or --freq h")
    if len(times) < 2:
        return channels.set_axis(times), times, step
    grid = pd.date_range(times[0], times[-1], freq=step, name=times.name or "time")
    if grid.unit != times.unit:
        grid = grid.as_unit(times.unit)
    off_grid = ~times.isin(grid)
    if off_grid.any():
        row = int(np.flatnonzero(off_grid)[0])
        raise InputError(f"row {row} of the history ({times[row]}) is not on the {step.freqstr} "
                         f"grid that starts at {times[0]}; pass the right freq= or resample the history")
    regular = channels.set_axis(times).reindex(grid)
    inserted = len(grid) - len(times)
    if inserted:
        warnings.warn(f"the history has gaps: {inserted} missing row(s) of its "
                      f"{step.freqstr} grid were inserted as missing values",
                      RustmlWarning, stacklevel=4)  # the caller of model.forecast
    return regular, grid, step


def frame_to_values(frame, context_length: int, num_channels: int | None, freq=None, pad: bool = False,
                    past_observed_mask=None):
    """(values [context_length, channels] float64 with NaN for missing, the grid's timestamps or None, the
    step or None, channel names) for the model (``num_channels`` None: any number of channels): the
    history put on its grid (``regular_history``), its
    last ``context_length`` rows; a shorter history is an InputError unless ``pad``, which left-pads with
    missing values. ``past_observed_mask`` ([rows, channels], 1 = observed) marks more values missing."""
    pd = _pandas()
    channels, _ = split_time(frame)
    if channels.shape[1] == 0:
        raise InputError("the data has no channel columns (only a time column)")
    if num_channels is not None and channels.shape[1] != num_channels:
        raise InputError(f"the model takes {num_channels} channel(s), the data has {channels.shape[1]}: "
                         f"{list(channels.columns)}")
    for column in channels.columns:
        kind = channels[column].dtype.kind
        if kind == "c":
            raise InputError(f"column {column!r} holds complex numbers; the model takes real values")
        if not pd.api.types.is_numeric_dtype(channels[column]) or kind == "b":
            raise InputError(f"columns must hold real numbers (one per channel); {column!r} is {channels[column].dtype}")
    if past_observed_mask is not None:
        mask = np.asarray(past_observed_mask)
        if mask.shape != channels.shape:
            raise InputError(f"past_observed_mask: expected shape {list(channels.shape)} like the history's channels, "
                             f"got {list(mask.shape)}")
        frame = frame.copy()
        frame[list(channels.columns)] = channels.where(mask.astype(bool))
    regular, times, step = regular_history(frame, freq)
    values = regular.to_numpy(dtype=np.float64)
    if len(values) < context_length:
        if not pad:
            raise InputError(f"the model needs {context_length} rows of history, the data has {len(values)}; "
                             "pass pad=True (--pad) to fill the start with missing values")
        values = np.concatenate([np.full((context_length - len(values), values.shape[1]), np.nan), values])
    return values[-context_length:], times, step, list(regular.columns)


def _column_list(value) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, str) or not hasattr(value, "__iter__") else list(value)


def panel_to_values(frame, id_columns, timestamp_column, target_columns, context_length: int,
                    num_channels: int | None, freq=None, pad: bool = False, progress: bool = False):
    """A long DataFrame of many series -> the model's input, series by series in the order their ids first
    appear: (ids [tuples], values [series, context_length, targets] with NaN for missing, each series' last
    timestamp [DatetimeIndex], each one's step, the target names, the id columns, the time column).
    ``id_columns`` name the series, ``timestamp_column`` its time axis, ``target_columns`` the channels
    (default: every other numeric column). Each series is put on its own grid and cut or padded as
    ``frame_to_values`` does; an error names the series. Gaps are reported in one warning for all series.
    The common case (every series regular at one fixed step, long enough) runs without a loop over series;
    ``progress`` shows a progress bar over the others."""
    pd = _pandas()
    ids, time_column = _column_list(id_columns), timestamp_column
    if not ids:
        raise InputError("id_columns: name the column(s) that tell the series apart")
    if time_column is None:
        time_column = next((c for c in frame.columns if str(c).lower() in TIME_COLUMNS), None)
        if time_column is None:
            raise InputError(f"timestamp_column: name the time column; the data has {list(frame.columns)}"[:300])
    targets = _column_list(target_columns)
    if not targets:
        targets = [c for c in frame.columns if c not in ids and c != time_column
                   and pd.api.types.is_numeric_dtype(frame[c])]
    missing = [c for c in [*ids, time_column, *targets] if c not in frame.columns]
    if missing:
        raise InputError(f"column(s) {missing} not in the data; it has {list(frame.columns)}"[:400])
    if len(frame) == 0:
        raise InputError("the data has no rows")
    times = _as_times(frame[time_column], time_column)
    regular = _regular_panel(frame, times, ids, targets, context_length, num_channels, freq)
    if regular is not None:
        return (*regular, targets, ids, time_column)
    keys, values, lasts, steps, gaps = [], [], [], [], []
    groups = frame.assign(**{time_column: times}).groupby(ids, sort=False, dropna=False)
    if progress:
        from tqdm.auto import tqdm

        groups = tqdm(groups, total=groups.ngroups, desc="reading series", unit="series")
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        series = group[targets].set_axis(pd.DatetimeIndex(group[time_column], name=time_column))
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RustmlWarning)
                rows, grid, step, _ = frame_to_values(series, context_length, num_channels, freq, pad)
        except InputError as error:
            raise InputError(f"series {dict(zip(ids, key))}: {error}") from None
        gaps += [key for warning in caught if issubclass(warning.category, RustmlWarning)]
        keys.append(key)
        values.append(rows)
        lasts.append(grid[-1:])
        steps.append(step)
    if gaps:
        warnings.warn(f"{len(gaps)} of {len(keys)} series have gaps in their time grid, inserted as missing values "
                      f"(first: {dict(zip(ids, gaps[0]))})"[:400], RustmlWarning, stacklevel=4)
    return keys, np.stack(values), lasts[0].append(lasts[1:]), steps, targets, ids, time_column


def _regular_panel(frame, times, ids, targets, context_length: int, num_channels, freq):
    """``panel_to_values``' result for the common case, without a loop over series: every series at least
    ``context_length`` rows on one fixed step (hours, minutes, days that are not whole weeks: the step
    ``pd.infer_freq`` names the same way) with no gap, timestamps increasing, no time zone, numeric targets.
    None when anything else holds: the series-by-series path then decides (and explains)."""
    pd = _pandas()
    if times.tz is not None or times.hasnans or (num_channels is not None and len(targets) != num_channels):
        return None
    if not all(pd.api.types.is_numeric_dtype(frame[c]) and frame[c].dtype.kind not in "bc" for c in targets):
        return None
    codes = frame.groupby(ids, sort=False, dropna=False).ngroup().to_numpy()
    stamps = times.to_numpy()
    order = np.lexsort((stamps, codes))  # by series (first appearance), then time
    codes, stamps = codes[order], stamps[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(codes)]
    if (ends - starts).min() < context_length or len(stamps) < 2:
        return None
    steps = np.diff(stamps)[codes[1:] == codes[:-1]]
    if len(steps) == 0 or steps[0] <= np.timedelta64(0) or np.any(steps != steps[0]):
        return None
    step = pd.tseries.frequencies.to_offset(pd.Timedelta(steps[0]))
    if not isinstance(step, pd.tseries.offsets.Tick) or (step.nanos % (7 * 86400 * 10**9) == 0):
        return None
    if freq is not None and pd.tseries.frequencies.to_offset(freq) != step:
        return None
    rows = ends[:, None] - context_length + np.arange(context_length)  # each series' last context_length rows
    values = frame[targets].to_numpy(dtype=np.float64)[order][rows]
    keys = list(frame[ids].iloc[order[starts]].itertuples(index=False, name=None))
    lasts = pd.DatetimeIndex(stamps[ends - 1], name=times.name)
    return keys, values, lasts, [step] * len(keys)


def future_index(times, step, length: int, history_rows: int):
    """The ``length`` steps after the history: timestamps at its step, else integers."""
    pd = _pandas()
    if times is None:
        return pd.RangeIndex(history_rows, history_rows + length, name="step")
    future = pd.date_range(times[-1], periods=length + 1, freq=step, name=times.name or "time")[1:]
    return future.as_unit(times.unit) if future.unit != times.unit else future


def read_table(path):
    """A CSV or Parquet file as a DataFrame; every failure an InputError or MissingFileError naming it."""
    pd = _pandas()
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; --input takes a .csv or .parquet file")
    if not path.is_file():
        raise MissingFileError(f"input file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in READABLE:
        raise InputError(f"{path}: expected a .csv or .parquet file")
    try:
        frame = pd.read_parquet(path) if suffix in (".parquet", ".pq") else pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty") from None
    except ImportError as error:
        raise InputError(f"{path}: reading Parquet needs pyarrow or fastparquet ({error})") from None
    except (ValueError, OSError, pd.errors.ParserError) as error:
        raise InputError(f"{path}: not a readable {suffix[1:]} table ({str(error).splitlines()[0]})") from None
    if frame.empty:
        raise InputError(f"{path}: no data rows (columns: {list(frame.columns)})")
    if suffix != ".parquet" and frame.shape[1] == 1 and any(sep in str(frame.columns[0]) for sep in ";\t|"):
        raise InputError(f"{path}: one column named {str(frame.columns[0])!r}: the file seems to use another "
                         "delimiter than ','; save it as comma-separated")
    return frame


WRITABLE = (".csv", ".txt", ".parquet", ".pq")


def check_output_path(path) -> Path:
    """Fail before any work if ``path`` cannot be written as a table: format, folder."""
    path = Path(path)
    if path.suffix.lower() not in WRITABLE:
        raise InputError(f"{path}: the output must end in .csv or .parquet")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name")
    if not path.parent.is_dir():
        raise InputError(f"{path}: the folder {path.parent} does not exist")
    return path


def write_table(frame, path) -> None:
    path = check_output_path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(path)
    else:
        frame.to_csv(path)
