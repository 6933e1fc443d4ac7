"""granite-tsfm's TinyTimeMixerForDecomposedPrediction (r3, the ``-dec-`` revisions): the series scaled once,
split into a robust trend and the residual around it, each forecast by its own TinyTimeMixerForPrediction
(run as ``model.TinyTimeMixerForPrediction``), the two forecasts summed and scaled back."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from ...errors import InputError, RustmlError, WeightMappingError
from ...inputs import as_array, check_series, chunk_in_dtype
from ...kernels.series import SCALING_MEAN, SCALINGS, add_mean_scaler_totals, scale_and_patchify
from ...threads import get_num_threads, run_tasks
from ..base import FamilyModel, unbatch
from .config import TinyTimeMixerConfig
from .detection import ArchitectureCheck
from . import forward
from .mapping import FORECASTERS
from .model import TinyTimeMixerForPrediction, _Forecasting

LOWESS_FRACTION, LOWESS_ITERATIONS, LOWESS_EPS = 0.15, 2, 1e-8  # granite-tsfm's robust_lowess_like defaults


@dataclasses.dataclass
class TinyTimeMixerForDecomposedPredictionOutput:
    prediction_outputs: np.ndarray  # [batch, horizon, channels forecast]: trend + residual forecasts
    quantile_outputs: np.ndarray | None = None  # [batch, levels, horizon, channels forecast] (multi-quantile heads)
    trend_prediction_outputs: np.ndarray | None = None
    residual_prediction_outputs: np.ndarray | None = None
    trend_input: np.ndarray | None = None  # [batch, time, channels forecast]: the trend of the history
    residual_input: np.ndarray | None = None  # [batch, residual steps, channels forecast]: the history less it
    trend_quantile_outputs: np.ndarray | None = None
    residual_quantile_outputs: np.ndarray | None = None
    input_data: np.ndarray | None = None  # past_values as given


class Forecasters(NamedTuple):
    trend: TinyTimeMixerForPrediction
    residual: TinyTimeMixerForPrediction


def robust_trend(values):
    """granite-tsfm's ``robust_lowess_like`` trend of values [batch, time, channels] (``forward.robust_trend``,
    its series split among the threads): a Gaussian local average over a window of ~15% of the steps (odd),
    re-weighted twice by Tukey's bisquare of the residuals."""
    dtype = values.dtype.type
    batch, steps, channels = values.shape
    window = max(5, int(round(LOWESS_FRACTION * steps)))
    window += 1 - window % 2
    window = min(window, steps if steps % 2 else steps - 1)
    offsets = np.arange(-(window // 2), window // 2 + 1).astype(values.dtype)
    kernel = np.exp(dtype(-0.5) * (offsets / dtype(0.25 * window)) ** 2)
    kernel = kernel / (kernel.sum() + dtype(1e-12))
    trend = np.empty_like(values)
    series = batch * channels
    tasks = min(get_num_threads(), series)

    def task(index):
        forward.robust_trend(values, kernel, LOWESS_ITERATIONS, LOWESS_EPS, index * series // tasks,
                             (index + 1) * series // tasks, trend)

    run_tasks(task, tasks)
    return trend


class TinyTimeMixerForDecomposedPrediction(_Forecasting, FamilyModel):
    """Forecasts as granite-tsfm's TinyTimeMixerForDecomposedPrediction: ``prediction_outputs`` [batch,
    horizon, channels], the sum of its trend and residual forecasters' (each output also returned)."""

    head = "decomposed"

    def __init__(self, config: TinyTimeMixerConfig, weights: Forecasters, dtype="float32",
                 check: ArchitectureCheck | None = None):
        super().__init__(config, weights, dtype, check)
        self.scaling = SCALINGS[config.scaler]
        self.layers = weights.trend.layers

    @property
    def input_channels(self) -> int | None:
        """Any number of channels when neither forecaster mixes them; else ``num_input_channels``."""
        channels = {self.weights.trend.input_channels, self.weights.residual.input_channels} - {None}
        return channels.pop() if channels else None

    @classmethod
    def from_hub_weights(cls, config: TinyTimeMixerConfig, hf_weights: dict, dtype: str = "float32"):
        """Split a granite-tsfm state dict into its two forecasters' (``trend_forecaster.``,
        ``residual_forecaster.``) and load each as a TinyTimeMixerForPrediction of its config."""
        unknown = sorted(key for key in hf_weights if not key.startswith(tuple(FORECASTERS.values())))
        if unknown:
            raise WeightMappingError(f"TinyTimeMixer (decomposed): checkpoint keys outside its trend and residual "
                                     f"forecasters: {unknown[:10]}")
        forecasters, mismatches = [], []
        for (ours, theirs), forecaster_config in zip(FORECASTERS.items(),
                                                     (config.trend_config(), config.residual_config())):
            part = {key[len(theirs):]: value for key, value in hf_weights.items() if key.startswith(theirs)}
            try:
                model = TinyTimeMixerForPrediction.from_hub_weights(forecaster_config, part, dtype)
            except RustmlError as error:
                raise type(error)(f"{theirs[:-1]}: {error}") from None
            forecasters.append(model)
            mismatches += model.architecture.mismatches
        trend, residual = forecasters
        report = dataclasses.replace(trend.architecture.report, head="decomposed")
        return cls(config, Forecasters(trend, residual), dtype, ArchitectureCheck(report, mismatches))

    def release_workspace(self) -> None:
        for forecaster in self.weights:
            forecaster.release_workspace()

    def __call__(self, past_values, past_observed_mask=None, freq_token=None, future_values=None,
                 static_categorical_values=None, output_hidden_states=False):
        """Forecast from ``past_values`` [batch, time, channels] (or one series), any length: scaled over all
        its steps, its trend found, the trend forecaster run on the scaled history and the residual forecaster
        on its last ``residual_context_length`` steps less the trend (each cuts or pads as granite-tsfm does).
        Other inputs as TinyTimeMixerForPrediction's, given to both forecasters; ``output_hidden_states`` is
        taken as granite-tsfm takes it, and as there its output holds no hidden states."""
        config = self.config
        given = as_array("past_values", past_values)
        steps = given.shape[-2] if given.ndim >= 2 else 0
        raw, raw_mask, single = check_series(given, past_observed_mask, steps, self.input_channels)
        if steps < 3:
            raise InputError(f"past_values: a decomposed TinyTimeMixer needs at least 3 steps to find the trend, "
                             f"got {steps}")
        values, observed = chunk_in_dtype(raw, raw_mask, self.dtype)
        scaled, loc, scale = self._scaled(values, observed)
        trend = robust_trend(scaled)
        residual_steps = min(config.residual_context_length or steps, steps)
        residual = scaled[:, -residual_steps:] - trend[:, -residual_steps:]
        inputs = dict(freq_token=freq_token, future_values=future_values,
                      static_categorical_values=static_categorical_values)
        trend_output = self.weights.trend(scaled, past_observed_mask=observed, **inputs)
        residual_output = self.weights.residual(np.ascontiguousarray(residual),
                                                past_observed_mask=observed[:, -residual_steps:], **inputs)
        channels = self.output_channels_for(values.shape[2])
        loc, scale = loc[..., channels], scale[..., channels]

        def unscaled(array, levels=False):  # granite-tsfm's scaler.inverse: data * scale + loc
            if array is None:
                return None
            return unbatch(array * (scale[:, None] if levels else scale) + (loc[:, None] if levels else loc), single)

        trend_levels, residual_levels = trend_output.quantile_outputs, residual_output.quantile_outputs
        combined_levels = None
        if trend_levels is not None:
            combined_levels = (self._combined_quantiles(trend_levels, residual_levels)
                               if config.combine_quantiles_via_variance else trend_levels + residual_levels)
        return TinyTimeMixerForDecomposedPredictionOutput(
            unscaled(trend_output.prediction_outputs + residual_output.prediction_outputs),
            unscaled(combined_levels, True), unscaled(trend_output.prediction_outputs),
            unscaled(residual_output.prediction_outputs), unscaled(trend[..., channels]),
            unscaled(residual[..., channels]), unscaled(trend_levels, True), unscaled(residual_levels, True), given)

    def _scaled(self, values, observed):
        """(scaled values [batch, time, channels], loc, scale [batch, 1, channels]): the config's scaler over
        every step of each series, as the forecasters' own (kernels.series), one patch of all steps."""
        batch, steps, channels = values.shape
        loc, scale = (np.empty((batch, 1, channels), self.dtype) for _ in range(2))
        scaled = np.empty((batch, channels, 1, steps), self.dtype)
        default_scale = np.ones(channels, self.dtype)
        if self.scaling == SCALING_MEAN:
            totals = np.zeros((2, channels))
            add_mean_scaler_totals(values, observed, totals)
            default_scale = (totals[0] / np.maximum(totals[1], 1.0)).astype(self.dtype)
        for b in range(batch):
            for c in range(channels):
                scale_and_patchify(values, observed, b, c, self.scaling, default_scale, steps, loc, scale,
                                   scaled[b, c])
        return np.ascontiguousarray(scaled[:, :, 0].transpose(0, 2, 1)), loc, scale

    @staticmethod
    def _combined_quantiles(trend, residual):
        """granite-tsfm's combine_quantiles_fast: the medians summed, each level's distances from them combined
        as the root of their squares (+ 1e-8) on the side of their sum; the median's distance 0."""
        middle = trend.shape[1] // 2
        trend_median, residual_median = trend[:, middle:middle + 1], residual[:, middle:middle + 1]
        trend_width, residual_width = trend - trend_median, residual - residual_median
        width = np.sign(trend_width + residual_width) * np.sqrt(np.square(trend_width) + np.square(residual_width)
                                                                 + trend.dtype.type(1e-8))
        width[:, middle] = 0
        return trend_median + residual_median + width

    def __repr__(self):
        trend, residual = self.weights
        return f"{type(self).__name__}(trend={trend!r}, residual={residual!r})"
