"""What every family's model classes share: the forward pass's orchestration, forecasting from DataFrames,
and output helpers.

A forward pass validates its input once (``rustml_nb.inputs``), then runs the batch in chunks of about
``CHUNK_ROWS`` rows, so the memory it needs beyond its input and outputs stays bounded whatever the batch
size. For each chunk: the values in the model's dtype; the family's encoder (``_encode_chunk``), which
scales, patches and encodes every series on ``get_num_threads()`` threads; the head (``_apply_head``).
A model holds its config and weights and nothing that a call changes, so one object can be called from any
number of threads at once (``rustml_nb.threads``).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import numpy as np

from ..errors import ArchitectureMismatchError, ConfigError, InputError
from ..inputs import as_array, check_series, chunk_in_dtype
from ..kernels.series import SCALING_MEAN, add_mean_scaler_totals
from ..threads import Shares, get_num_threads, release_scratch, run_tasks, scratch

DTYPES = {"float32": np.float32, "float64": np.float64}
# Rows (series x tokens) per chunk: 16 MiB of rows at d_model 128 in float32, many blocks for every thread.
CHUNK_ROWS = 32768
NO_MASK = np.zeros((0, 0, 0), dtype=bool)
# Steps a thread's share of a chunk is run in when it holds many blocks: the finer, the better a thread done
# early can take over another's work, the more Python calls between compiled passes.
STEPS_PER_SHARE = 8
# Series per forward pass when forecasting a long table of many series (each pass runs in chunks itself).
PANEL_BATCH = 4096


def model_dtype(dtype: str):
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    return np.dtype(DTYPES[dtype])


class Arrays(NamedTuple):
    """What one forward pass computes; fields a class does not need are None."""

    last_hidden_state: np.ndarray | None  # [batch, channels, tokens, d_model]
    loc: np.ndarray  # [batch, 1, channels]
    scale: np.ndarray  # [batch, 1, channels]
    patch_input: np.ndarray | None  # [batch, channels, patches, patch_length]
    head: np.ndarray | None  # see the class's _head_output
    hidden_states: np.ndarray | None  # [layers, batch, channels, tokens, d_model]
    decoded: np.ndarray | None = None  # a family with a decoder: [batch, channels, tokens, decoder width]
    decoded_states: np.ndarray | None = None  # its hidden states: [decoder_layers, batch, channels, tokens, width]


class Chunk(NamedTuple):
    """One chunk's arrays, as the family's encoder fills them (series = chunk batch x channels)."""

    values: np.ndarray  # [batch, time, channels] in the dtype, missing values 0
    observed: np.ndarray  # [batch, time, channels], 1.0 / 0.0
    default_scale: np.ndarray  # [channels]: the mean scaler's for a series with no observed value
    patch_mask: np.ndarray  # [batch, channels, patches] bool, or [0, 0, 0]
    loc: np.ndarray  # [batch, 1, channels]
    scale: np.ndarray  # [batch, 1, channels]
    patch_input: np.ndarray  # [series, patches, patch_length]
    patches: np.ndarray  # patch_input, masked where patch_mask says (patch_input itself without a mask)
    stream: np.ndarray  # [series * tokens, d_model]
    hidden_states: np.ndarray  # [layers or 0, series * tokens, d_model]
    pooled: np.ndarray  # [series or 0, d_model]
    head: np.ndarray | None  # the chunk's part of the head's output (Arrays.head)
    decoded: np.ndarray  # a family with a decoder: [series * tokens, decoder width]; else [0, 0]
    prefix: np.ndarray  # rows put in front of each series' patches, per batch element [batch, rows, d_model]; or [0, 0, 0]
    decoded_states: np.ndarray  # [decoder_layers or 0, series * tokens, decoder width]
    static_rows: np.ndarray  # rows that join each batch element's channels in a decoder [batch, rows, width]; or [0, 0, 0]


class FamilyModel:
    """Base of every model class. A family's class sets ``head`` and implements ``_encode_task`` (one thread's
    share of a chunk), and its head classes ``_head_output`` and either ``_series_head`` (a head that reads
    each series alone, run by each thread on its share right after encoding it) or ``_apply_head`` (once per
    chunk, after every thread is done)."""

    head: ClassVar[str]
    # Set by the family: how many tokens a series has, how many series attend or mix together (a unit), and
    # whether the head reads pooled rows.
    tokens: int
    unit_series: int
    pools: bool = False
    scaling: int
    layers: int  # hidden states a forward pass can return
    block_rows: int  # rows of a thread's scratch block
    decoder_width: int = 0  # a family whose head reads a decoder's rows: their width
    decoder_layers: int = 0  # hidden states its decoder can return

    @property
    def keeps_last_hidden_state(self) -> bool:
        """Whether the class returns the encoder's output (its stream is then written straight into it)."""
        return self.head == "none"

    def __init__(self, config, weights, dtype="float32", check=None):
        self.config = config
        self.weights = weights
        self.dtype = model_dtype(dtype)
        self.architecture = check

    @property
    def input_channels(self) -> int | None:
        """The channels an input must have; None: any number (a family whose channels never meet)."""
        return self.config.num_input_channels

    @classmethod
    def from_pretrained(cls, repo_id_or_path, revision=None, dtype: str = "float32", cache_dir=None, token=None,
                        local_files_only: bool = False, **config_overrides):
        """Load a checkpoint folder, or a Hub repo id through ``HubApi`` (see ``rustml_nb.from_pretrained``)."""
        from ..bundle import load_bundle
        from .config import override_fields

        bundle = load_bundle(repo_id_or_path, revision, cache_dir, token, local_files_only)
        return cls.from_hub_weights(override_fields(bundle.config, config_overrides), bundle.load_tensors(), dtype)

    def release_workspace(self) -> None:
        """Free the scratch buffers kept for models of this shape and dtype (a few MB for each of
        ``rustml_nb.get_num_threads()`` compute slots). The next call makes them again, once; calls under way
        keep theirs."""
        release_scratch(self._scratch_key())

    def __repr__(self):
        c = self.config
        return (f"{type(self).__name__}(channels={c.num_input_channels}, context_length={c.context_length}, "
                f"d_model={c.d_model}, layers={self.layers}, dtype={self.dtype.name})")

    # --- the forward pass -----------------------------------------------------------------------
    def _scratch_key(self):
        """What identifies this model's scratch buffers; models with equal keys share them."""
        raise NotImplementedError

    def _make_scratch(self):
        raise NotImplementedError

    def _patch_mask(self, mask, batch, channels):
        if mask is None:
            return None
        mask = as_array("mask", mask)
        expected = (batch, channels, self.config.num_patches)
        if mask.shape != expected:
            raise InputError(f"mask: expected shape {list(expected)} (batch, channels, patches), got {list(mask.shape)}")
        if mask.dtype.kind not in "biu":
            raise InputError(f"mask must be bool or 0/1 integers, got dtype {mask.dtype}")
        return mask.astype(bool)

    def _forward(self, past_values, past_observed_mask, mask=None, output_hidden_states=False, prefix=None,
                 static_rows=None):
        """Validate, then run the batch chunk by chunk: encode on every thread, apply the head. ``prefix``
        [batch, d_model]: a token row put in front of each series' patches (the family's encoder reads it);
        ``static_rows`` [batch, rows, width]: rows the family's decoder adds to each batch element's channels."""
        config, dtype = self.config, self.dtype
        raw, raw_mask, single = check_series(past_values, past_observed_mask, config.context_length,
                                             self.input_channels)
        batch, channels = raw.shape[0], raw.shape[2]
        patch_mask = self._patch_mask(mask, batch, channels)
        num_patches, patch_length, d_model, tokens = config.num_patches, config.patch_length, config.d_model, self.tokens
        num_layers = self.layers if output_hidden_states else 0
        decoder_layers = self.decoder_layers if output_hidden_states and self.decoder_width else 0
        chunk = max(1, CHUNK_ROWS // (channels * tokens))

        def chunks():
            return ((first, min(first + chunk, batch)) for first in range(0, batch, chunk))

        try:
            out = Arrays(
                last_hidden_state=np.empty((batch, channels, tokens, d_model), dtype)
                if self.keeps_last_hidden_state else None,
                loc=np.empty((batch, 1, channels), dtype), scale=np.empty((batch, 1, channels), dtype),
                patch_input=np.empty((batch, channels, num_patches, patch_length), dtype)
                if self.head == "none" else None,
                head=self._head_output(batch, channels, dtype),
                hidden_states=np.empty((num_layers, batch, channels, tokens, d_model), dtype)
                if output_hidden_states else None,
                decoded=np.empty((batch, channels, tokens, self.decoder_width), dtype) if self.decoder_width else None,
                decoded_states=np.empty((decoder_layers, batch, channels, tokens, self.decoder_width), dtype)
                if decoder_layers else None)
        except MemoryError:
            raise InputError(f"the outputs of a batch of {batch} series do not fit in memory; run it in smaller "
                             "batches") from None

        default_scale = np.ones(channels, dtype=dtype)
        if self.scaling == SCALING_MEAN:  # the mean scaler's batch default, from the whole batch
            totals = np.zeros((2, channels))
            for first, last in chunks():
                add_mean_scaler_totals(*chunk_in_dtype(raw[first:last], _part(raw_mask, first, last), dtype, first),
                                       totals)
            default_scale = (totals[0] / np.maximum(totals[1], 1.0)).astype(dtype)
        for first, last in chunks():
            values, observed = chunk_in_dtype(raw[first:last], _part(raw_mask, first, last), dtype, first)
            series = (last - first) * channels
            patch_input = (out.patch_input[first:last] if out.patch_input is not None else
                           np.empty((last - first, channels, num_patches, patch_length), dtype))
            patch_input = patch_input.reshape(series, num_patches, patch_length)
            stream = (out.last_hidden_state[first:last].reshape(series * tokens, d_model)
                      if out.last_hidden_state is not None else np.empty((series * tokens, d_model), dtype))
            part = Chunk(values, observed, default_scale,
                         NO_MASK if patch_mask is None else patch_mask[first:last],
                         out.loc[first:last], out.scale[first:last], patch_input,
                         patch_input if patch_mask is None else np.empty_like(patch_input), stream,
                         np.empty((num_layers, series * tokens, d_model), dtype),
                         np.empty((series if self.pools else 0, d_model), dtype),
                         None if out.head is None else out.head[first:last],
                         np.zeros((0, 0), dtype) if out.decoded is None else
                         out.decoded[first:last].reshape(series * tokens, self.decoder_width),
                         np.zeros((0, 0, 0), dtype) if prefix is None else prefix[first:last],
                         np.empty((decoder_layers, series * tokens, self.decoder_width), dtype),
                         np.zeros((0, 0, 0), dtype) if static_rows is None else static_rows[first:last])
            self._encode_chunk(part)
            if num_layers:
                out.hidden_states[:, first:last] = part.hidden_states.reshape(num_layers, last - first, channels,
                                                                              tokens, d_model)
            if decoder_layers:
                out.decoded_states[:, first:last] = part.decoded_states.reshape(
                    decoder_layers, last - first, channels, tokens, self.decoder_width)
            self._apply_head(part, out, first, last)
        return out, single

    def _encode_chunk(self, part: Chunk) -> None:
        """The family's encoder and series head over every unit of the chunk: an equal share for each thread,
        run in steps of a block or more (``STEPS_PER_SHARE`` steps to a share when the share is large), so
        that a thread done early takes over the later half of the steps another has not begun
        (``threads.Shares``). A unit's result does not depend on the step or thread that runs it."""
        units = part.patches.shape[0] // self.unit_series
        tasks = min(get_num_threads(), units)
        step = max(self._units_per_block(), -(-units // (tasks * STEPS_PER_SHARE)))
        shares = Shares(units, tasks, step)
        key = self._scratch_key()

        def task(index):
            # Task 0 runs on the calling thread when a compute slot is free, and starts first: it takes the
            # last share, the larger one when they differ.
            work = scratch(key, self._make_scratch)
            while (taken := shares.take(tasks - 1 - index)) is not None:
                first_unit, last_unit = taken
                self._encode_task(part, first_unit, last_unit, work)
                self._series_head(part, first_unit * self.unit_series, last_unit * self.unit_series)

        run_tasks(task, tasks)

    def _units_per_block(self) -> int:
        """Units a thread's scratch block holds."""
        return max(self.block_rows // (self.tokens * self.unit_series), 1)

    def _encode_task(self, part: Chunk, first_unit: int, last_unit: int, work) -> None:
        raise NotImplementedError

    def _head_output(self, batch, channels, dtype):
        return None

    def _series_head(self, part: Chunk, first_series: int, last_series: int) -> None:
        pass

    def _apply_head(self, part: Chunk, out: Arrays, first: int, last: int) -> None:
        pass

    @staticmethod
    def _hidden_tuple(out: Arrays, single):
        if out.hidden_states is None:
            return None
        return tuple(unbatch(state, single) for state in out.hidden_states)


def check_agreement(check) -> None:
    """ArchitectureMismatchError listing every field where config.json and the weights disagree."""
    if check.mismatches:
        details = "; ".join(f"{field}: config says {want!r}, weights say {have!r}" for field, want, have in check.mismatches)
        raise ArchitectureMismatchError(f"config.json and the weights disagree: {details}")


def _part(mask, first, last):
    return None if mask is None else mask[first:last]


def unbatch(array, single):
    return array[0] if single else array


def head_parameters(array, single):
    """[batch, parameters, ...] -> one contiguous array per parameter, [batch, ...] (or [...] for one series)."""
    return tuple(unbatch(np.ascontiguousarray(array[:, k]), single) for k in range(array.shape[1]))


@dataclasses.dataclass
class SampleOutput:
    """``generate``'s output, as transformers' ``Sample...Output``."""

    sequences: np.ndarray  # [batch, samples, horizon, channels]


def quantile_levels(levels) -> np.ndarray:
    """``levels`` as a float64 array of probabilities strictly between 0 and 1; InputError otherwise."""
    try:
        array = np.asarray(levels, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"quantiles must be numbers in (0, 1), got {levels!r}"[:200]) from None
    if array.size == 0 or not np.all((array > 0) & (array < 1)):
        raise InputError(f"quantiles must be numbers in (0, 1), got {levels!r}"[:200])
    return array


class Forecaster:
    """Point forecasts and DataFrames, for a family's prediction class (``output_channels``: the indices of
    the channels its forecasts hold; ``horizon``: the steps they hold; ``distribution``: its head's
    distribution, or None)."""

    distribution: str | None = None
    reads_future: bool = False  # whether forecast() takes the known future of exogenous channels (future=)

    @property
    def output_channels(self) -> list[int]:
        return list(range(self.config.num_input_channels))

    @property
    def horizon(self) -> int:
        return self.config.prediction_length

    def output_channels_for(self, channels: int) -> list[int]:
        """The input channels a forecast of an input of ``channels`` channels holds (for a family that takes
        any number of channels; else always ``output_channels``)."""
        return self.output_channels

    def _frame_forward(self, values, steps, columns):
        """The forward pass ``forecast`` runs on DataFrame values [series, context_length, channels]; ``steps``:
        each series' time step (a pandas offset, or None without timestamps); ``columns``: the channels'
        names. A family whose ``forecast`` takes more inputs takes them here as keywords."""
        return self(values)

    def point_forecast(self, output) -> np.ndarray:
        """[batch, horizon, channels] point forecasts: ``prediction_outputs`` for a point head, the mean of
        the predicted distribution (in data units, as transformers' ``distribution(...).mean``) otherwise."""
        if self.distribution is None:
            return output.prediction_outputs
        params, loc, scale = output.prediction_outputs, output.loc, output.scale
        if self.distribution == "student_t":
            df, mean = params[0], params[1]
            return np.where(df > 1, mean, np.nan) * scale + loc
        if self.distribution == "normal":
            return params[0] * scale + loc
        total_count, logits = params  # negative binomial: transformers adds log(scale) to the logits, ignores loc
        return total_count * np.exp(logits + np.log(scale))

    def _require_distribution(self, what: str) -> None:
        if self.distribution is None:
            loss = getattr(self.config, "loss", None)
            raise ConfigError(f"{what}: this checkpoint has a point head (loss {loss!r}), so there is no predicted "
                              "distribution; a distribution head (distribution_output, loss 'nll') has one")

    def _require_quantiles(self, levels) -> None:
        """ConfigError when this model cannot give the quantiles ``levels``: here, when it has no distribution
        head (a family with quantile heads overrides it)."""
        self._require_distribution("quantiles")

    def _predicted_distribution(self, output):
        """The predicted distribution in data units, as a scipy.stats distribution over the forecast's shape,
        built as transformers builds it: a Student t or normal shifted by ``loc`` and scaled by ``scale``; a
        negative binomial (torch's counts successes of probability sigmoid(logits)) whose logits take
        log(scale) instead. A point head: ConfigError."""
        self._require_distribution("quantiles and samples")
        from scipy import special, stats

        params, loc, scale = output.prediction_outputs, output.loc, output.scale
        if self.distribution == "student_t":
            return stats.t(params[0], params[1] * scale + loc, params[2] * scale)
        if self.distribution == "normal":
            return stats.norm(params[0] * scale + loc, params[1] * scale)
        total_count, logits = params
        return stats.nbinom(total_count, special.expit(-(logits + np.log(scale))))

    def quantiles(self, output, levels) -> np.ndarray:
        """[len(levels), *forecast shape]: the predicted distribution's quantiles at ``levels`` (each in (0, 1)),
        in data units, exactly: scipy.stats' inverse CDF of the distribution the head's parameters describe
        (see ``_predicted_distribution``). A point head: ConfigError."""
        distribution = self._predicted_distribution(output)
        levels = quantile_levels(levels)
        dtype = output.prediction_outputs[0].dtype
        return distribution.ppf(levels.reshape((-1,) + (1,) * output.prediction_outputs[0].ndim)).astype(dtype)

    def generate(self, past_values, past_observed_mask=None, num_samples: int | None = None, seed=None) -> SampleOutput:
        """Sample forecasts, as transformers' ``generate``: ``sequences`` [batch, num_samples, horizon, channels]
        ([num_samples, horizon, channels] for one series) drawn from the predicted distribution
        (``num_samples`` defaults to the config's ``num_parallel_samples``), reproducible with ``seed`` (NumPy's
        generator, so not torch's draws). A point head returns its forecast as the one sample, as transformers'
        PatchTST does."""
        output = self(past_values, past_observed_mask)
        if self.distribution is None:
            return SampleOutput(np.expand_dims(output.prediction_outputs, -3))
        count = self.config.num_parallel_samples if num_samples is None else num_samples
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise InputError(f"num_samples must be a positive integer, got {num_samples!r}")
        shape = output.prediction_outputs[0].shape
        rng = np.random.default_rng(seed)
        draws = self._predicted_distribution(output).rvs(size=(int(count),) + shape, random_state=rng)
        draws = draws.astype(output.prediction_outputs[0].dtype)
        return SampleOutput(np.moveaxis(draws, 0, 1) if len(shape) == 3 else draws)

    def forecast(self, history, past_observed_mask=None, freq=None, pad: bool = False, quantiles=None,
                 id_columns=None, timestamp_column=None, target_columns=None, progress: bool = False, **inputs):
        """Point forecasts for a DataFrame (columns = channels; a DatetimeIndex or a time column) or an array.

        A DataFrame gets a DataFrame back, indexed by the ``horizon`` steps after its last row, with
        the column names of the channels forecast. Its timestamps must increase; the step is inferred
        (``freq``, e.g. ``"h"``, overrides it), and rows missing from that grid are inserted as missing values,
        with a warning. The last ``context_length`` rows are used; a shorter history is an error unless
        ``pad=True``, which fills the start with missing values. NaN marks a missing value, as does 0 in
        ``past_observed_mask`` ([rows, channels]). ``quantiles`` (e.g. ``[0.1, 0.9]``, a distribution head's
        checkpoint): one more column per channel and level, ``{channel}_q{level}``, the predicted
        distribution's exact quantiles (see ``quantiles``). An array gets
        ``point_forecast(self(array, past_observed_mask))``; its quantiles are ``quantiles(self(array), levels)``.

        Many series in one long DataFrame: ``id_columns`` name the columns that tell them apart,
        ``timestamp_column`` the time (default: a column named like one), ``target_columns`` the channels
        (default: every other numeric column). Each series follows the rules above on its own (its own grid,
        step and padding); they run through the model in batches of ``PANEL_BATCH``. The result is long too:
        the id columns, the future timestamps and one column per target (and quantile), series in the order
        their ids first appear. ``progress=True`` shows progress bars (tqdm) while reading and forecasting them.
        """
        if quantiles is not None:
            self._require_quantiles(quantiles)
            quantiles = quantile_levels(quantiles)
        if id_columns is not None:
            if past_observed_mask is not None:
                raise InputError("past_observed_mask with id_columns: mark missing values as NaN in the long table")
            return self._forecast_panel(history, id_columns, timestamp_column, target_columns, freq, pad, quantiles,
                                        progress, **inputs)
        if timestamp_column is not None or target_columns is not None:
            raise InputError("timestamp_column and target_columns describe a long table of many series: give "
                             "id_columns too")
        if not hasattr(history, "columns"):
            if quantiles is not None:
                raise InputError("quantiles= needs a DataFrame; for arrays, model.quantiles(model(values), levels)")
            return self.point_forecast(self(history, past_observed_mask, **inputs))
        import pandas as pd

        from ..frames import frame_to_values, future_index

        values, times, step, columns = frame_to_values(history, self.config.context_length, self.input_channels,
                                                       freq, pad, past_observed_mask)
        points, bands = self._forecast_values(values[None], [step], columns, quantiles, **inputs)
        names = [columns[c] for c in self.output_channels_for(len(columns))]
        index = future_index(times, step, self.horizon, len(history))
        frame = pd.DataFrame(points[0], columns=names, index=index)
        if bands is None:
            return frame
        return pd.concat([frame, pd.DataFrame(self._quantile_columns(bands[:, 0], names, quantiles), index=index)],
                         axis=1)

    def _forecast_values(self, values, steps, columns, quantiles, progress: bool = False, **inputs):
        """(point forecasts [series, horizon, channels], quantiles [levels, series, horizon, channels] or None)
        for DataFrame values [series, context_length, channels], PANEL_BATCH series per forward pass."""
        points, bands = [], []
        firsts = range(0, len(values), PANEL_BATCH)
        if progress:
            from tqdm.auto import tqdm

            firsts = tqdm(firsts, desc=f"forecasting {len(values)} series", unit="batch")
        for first in firsts:
            last = min(first + PANEL_BATCH, len(values))
            output = self._frame_forward(values[first:last], steps[first:last], columns, **inputs)
            points.append(self.point_forecast(output))
            if quantiles is not None:
                bands.append(self.quantiles(output, quantiles))
        return np.concatenate(points), None if quantiles is None else np.concatenate(bands, axis=1)

    @staticmethod
    def _quantile_columns(bands, names, levels) -> dict:
        """{"{channel}_q{level}": values} from bands [levels, rows..., channels], channel by channel."""
        return {f"{name}_q{level:g}": bands[i, ..., c].reshape(-1)
                for c, name in enumerate(names) for i, level in enumerate(levels)}

    def _forecast_panel(self, history, id_columns, timestamp_column, target_columns, freq, pad, quantiles, progress,
                        **inputs):
        import pandas as pd

        from ..frames import future_index, panel_to_values

        if not hasattr(history, "columns"):
            raise InputError("id_columns: expected a long DataFrame (ids, timestamps, targets), got "
                             f"{type(history).__name__}")
        keys, values, lasts, steps, targets, ids, time_column = panel_to_values(
            history, id_columns, timestamp_column, target_columns, self.config.context_length, self.input_channels,
            freq, pad, progress)
        points, bands = self._forecast_values(values, steps, targets, quantiles, progress, **inputs)
        names = [targets[c] for c in self.output_channels_for(len(targets))]
        horizon = self.horizon
        columns = {column: pd.Series([key[j] for key in keys], dtype=history[column].dtype).repeat(horizon).to_numpy()
                   for j, column in enumerate(ids)}
        if all(step == steps[0] for step in steps) and isinstance(steps[0], pd.tseries.offsets.Tick):
            ahead = np.arange(1, horizon + 1) * pd.Timedelta(steps[0]).to_timedelta64()
            columns[time_column] = (lasts.to_numpy()[:, None] + ahead).reshape(-1)
        else:
            columns[time_column] = np.concatenate([future_index(lasts[i:i + 1], step, horizon, 0).to_numpy()
                                                   for i, step in enumerate(steps)])
        columns.update({name: points[..., c].reshape(-1) for c, name in enumerate(names)})
        if bands is not None:
            columns.update(self._quantile_columns(bands, names, quantiles))
        return pd.DataFrame(columns)
