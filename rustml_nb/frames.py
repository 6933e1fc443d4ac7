"""pandas in and out: a DataFrame of channels -> the model's input; a forecast -> a DataFrame indexed by
the future. Also reading and writing CSV/Parquet for the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError, MissingFileError

TIME_COLUMNS = ("time", "date", "datetime", "timestamp", "ds")


def _pandas():
    import pandas

    return pandas


def split_time(frame):
    """(frame of channels, time index or None): a DatetimeIndex, or a column named like a time, or a
    first column that parses as dates, is taken as the time axis."""
    pd = _pandas()
    if isinstance(frame.index, pd.DatetimeIndex):
        return frame, frame.index
    for column in frame.columns:
        if str(column).lower() in TIME_COLUMNS:
            return frame.drop(columns=[column]), pd.DatetimeIndex(pd.to_datetime(frame[column]), name=column)
    first = frame.columns[0] if len(frame.columns) else None
    if first is not None and not pd.api.types.is_numeric_dtype(frame[first]):
        try:
            times = pd.to_datetime(frame[first])
        except (ValueError, TypeError):
            return frame, None
        return frame.drop(columns=[first]), pd.DatetimeIndex(times, name=first)
    return frame, None


def frame_to_values(frame, context_length: int, num_channels: int):
    """The last ``context_length`` rows of a DataFrame as float64 values [context_length, channels]
    (NaN marks missing), with the time index (or None) and channel names."""
    channels, times = split_time(frame)
    non_numeric = [c for c in channels.columns if not _pandas().api.types.is_numeric_dtype(channels[c])]
    if non_numeric:
        raise InputError(f"columns must be numeric (one per channel); not numeric: {non_numeric}")
    if channels.shape[1] != num_channels:
        raise InputError(f"the model takes {num_channels} channel(s), the data has {channels.shape[1]}: "
                         f"{list(channels.columns)}")
    if len(channels) < context_length:
        raise InputError(f"the model needs {context_length} rows of history, the data has {len(channels)}")
    values = channels.to_numpy(dtype=np.float64)[-context_length:]
    return values, (None if times is None else times[-context_length:]), list(channels.columns)


def future_index(times, length: int, history_rows: int):
    """The ``length`` steps after the history: timestamps at the inferred frequency, else integers."""
    pd = _pandas()
    if times is None:
        return pd.RangeIndex(history_rows, history_rows + length, name="step")
    frequency = pd.infer_freq(times) if len(times) >= 3 else None
    step = pd.tseries.frequencies.to_offset(frequency) if frequency else pd.Timedelta(np.median(np.diff(times.asi8)))
    return pd.DatetimeIndex([times[-1] + step * (i + 1) for i in range(length)], name=times.name or "time")


def read_table(path):
    """A CSV or Parquet file as a DataFrame."""
    pd = _pandas()
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"input file not found: {path}")
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if path.suffix.lower() in (".csv", ".txt"):
        return pd.read_csv(path)
    raise InputError(f"{path}: expected a .csv or .parquet file")


def write_table(frame, path) -> None:
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(path)
    elif path.suffix.lower() in (".csv", ".txt"):
        frame.to_csv(path)
    else:
        raise InputError(f"{path}: the output must end in .csv or .parquet")
