"""What granite-tsfm's toolkit (tsfm_public 0.3.11) knows about the released TinyTimeMixers: which branch of
which Hub repo holds which context and prediction length (its ``resources/model_paths_config/ttm.yaml``), how it
picks one for a requested context and horizon (its ``toolkit.get_model.get_model``, and for r3 its
``_select_ttm_r3_revision_*``), and the frequency tokens of its preprocessor (``DEFAULT_FREQUENCY_MAPPING``)
that the ``-ft-`` revisions take."""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

from ...errors import ConfigError, InputError, RustmlWarning

# granite-tsfm's DEFAULT_FREQUENCY_MAPPING: pandas frequency string -> the token resolution_prefix_tuning takes.
FREQUENCY_TOKENS = {"oov": 0, "min": 1, "2min": 2, "5min": 3, "10min": 4, "15min": 5, "30min": 6, "h": 7, "H": 7,
                    "d": 8, "D": 8, "W": 9}
# Contexts up to this are the "low resolution" ones where the l1 / ft preferences apply (granite-tsfm's
# TTM_LOW_RESOLUTION_MODELS_MAX_CONTEXT).
LOW_RESOLUTION_MAX_CONTEXT = 512
FORCE_RETURN = ("zeropad", "rolling", "random_init_small", "random_init_medium", "random_init_large")


class Release(NamedTuple):
    key: str  # granite-tsfm's name: <context>-<prediction>[-ft][-l1]-<release>
    release: str  # r1, r2, r2.1
    repo_id: str
    revision: str  # the branch of repo_id that holds it
    context_length: int
    prediction_length: int


# ttm.yaml's entries for r1, r2, r2.1 and the research r2.
RELEASES = tuple(Release(*entry) for entry in (
    ("512-96-r1", "r1", "ibm-granite/granite-timeseries-ttm-r1", "main", 512, 96),
    ("1024-96-r1", "r1", "ibm-granite/granite-timeseries-ttm-r1", "1024_96_v1", 1024, 96),
    ("512-96-r2", "r2", "ibm-granite/granite-timeseries-ttm-r2", "main", 512, 96),
    ("512-192-r2", "r2", "ibm-granite/granite-timeseries-ttm-r2", "512-192-r2", 512, 192),
    ("512-336-r2", "r2", "ibm-granite/granite-timeseries-ttm-r2", "512-336-r2", 512, 336),
    ("512-720-r2", "r2", "ibm-granite/granite-timeseries-ttm-r2", "512-720-r2", 512, 720),
    ("1024-96-r2", "r2", "ibm-granite/granite-timeseries-ttm-r2", "1024-96-r2", 1024, 96),
    ("1024-192-r2", "r2", "ibm-granite/granite-timeseries-ttm-r2", "1024-192-r2", 1024, 192),
    ("1024-336-r2", "r2", "ibm-granite/granite-timeseries-ttm-r2", "1024-336-r2", 1024, 336),
    ("1024-720-r2", "r2", "ibm-granite/granite-timeseries-ttm-r2", "1024-720-r2", 1024, 720),
    ("1536-96-r2", "r2", "ibm-granite/granite-timeseries-ttm-r2", "1536-96-r2", 1536, 96),
    ("1536-192-r2", "r2", "ibm-granite/granite-timeseries-ttm-r2", "1536-192-r2", 1536, 192),
    ("1536-336-r2", "r2", "ibm-granite/granite-timeseries-ttm-r2", "1536-336-r2", 1536, 336),
    ("1536-720-r2", "r2", "ibm-granite/granite-timeseries-ttm-r2", "1536-720-r2", 1536, 720),
    ("52-16-ft-r2.1", "r2.1", "ibm-granite/granite-timeseries-ttm-r2", "52-16-ft-r2.1", 52, 16),
    ("52-16-ft-l1-r2.1", "r2.1", "ibm-granite/granite-timeseries-ttm-r2", "52-16-ft-l1-r2.1", 52, 16),
    ("90-30-ft-r2.1", "r2.1", "ibm-granite/granite-timeseries-ttm-r2", "90-30-ft-r2.1", 90, 30),
    ("90-30-ft-l1-r2.1", "r2.1", "ibm-granite/granite-timeseries-ttm-r2", "90-30-ft-l1-r2.1", 90, 30),
    ("180-60-ft-l1-r2.1", "r2.1", "ibm-granite/granite-timeseries-ttm-r2", "180-60-ft-l1-r2.1", 180, 60),
    ("360-60-ft-l1-r2.1", "r2.1", "ibm-granite/granite-timeseries-ttm-r2", "360-60-ft-l1-r2.1", 360, 60),
    ("512-48-ft-r2.1", "r2.1", "ibm-granite/granite-timeseries-ttm-r2", "512-48-ft-r2.1", 512, 48),
    ("512-48-ft-l1-r2.1", "r2.1", "ibm-granite/granite-timeseries-ttm-r2", "512-48-ft-l1-r2.1", 512, 48),
    ("512-96-ft-r2.1", "r2.1", "ibm-granite/granite-timeseries-ttm-r2", "512-96-ft-r2.1", 512, 96),
    ("512-96-ft-l1-r2.1", "r2.1", "ibm-granite/granite-timeseries-ttm-r2", "512-96-ft-l1-r2.1", 512, 96),
    ("512-96-ft-r2", "r2", "ibm-research/ttm-research-r2", "main", 512, 96),
    ("512-192-ft-r2", "r2", "ibm-research/ttm-research-r2", "512-192-ft-r2", 512, 192),
    ("512-336-ft-r2", "r2", "ibm-research/ttm-research-r2", "512-336-ft-r2", 512, 336),
    ("512-720-ft-r2", "r2", "ibm-research/ttm-research-r2", "512-720-ft-r2", 512, 720),
    ("1024-96-ft-r2", "r2", "ibm-research/ttm-research-r2", "1024-96-ft-r2", 1024, 96),
    ("1024-192-ft-r2", "r2", "ibm-research/ttm-research-r2", "1024-192-ft-r2", 1024, 192),
    ("1024-336-ft-r2", "r2", "ibm-research/ttm-research-r2", "1024-336-ft-r2", 1024, 336),
    ("1024-720-ft-r2", "r2", "ibm-research/ttm-research-r2", "1024-720-ft-r2", 1024, 720),
    ("1536-96-ft-r2", "r2", "ibm-research/ttm-research-r2", "1536-96-ft-r2", 1536, 96),
    ("1536-192-ft-r2", "r2", "ibm-research/ttm-research-r2", "1536-192-ft-r2", 1536, 192),
    ("1536-336-ft-r2", "r2", "ibm-research/ttm-research-r2", "1536-336-ft-r2", 1536, 336),
    ("1536-720-ft-r2", "r2", "ibm-research/ttm-research-r2", "1536-720-ft-r2", 1536, 720),
))
# Repo id prefixes -> the releases get_model chooses among (granite-tsfm's check_ttm_model_path).
REPO_RELEASES = (
    (("ibm/TTM", "ibm-granite/granite-timeseries-ttm-r1", "ibm-granite/granite-timeseries-ttm-v1",
      "ibm-granite/granite-timeseries-ttm-1m"), "ibm-granite", "r1"),
    (("ibm-granite/granite-timeseries-ttm-r2",), "ibm-granite", "r2"),
    (("ibm-research/ttm-research-r2",), "ibm-research", "r2"),
)
R3_REPOS = ("ibm-research/ttm-r3", "ibm-granite/granite-timeseries-ttm-r3")
# ttm.yaml's r3 revisions, each a branch of both r3 repos: (key, context, prediction); "-dec-" ones are
# decomposed models, "-lite-" ones smaller. get_model chooses among the research table's, for either repo.
R3_REVISIONS = tuple(
    (f"{context}-{horizon}{kind}{lite}-r3", context, horizon) for lite in ("", "-lite") for context, horizon, kind in (
        (156, 16, "-dec-52"), (512, 30, "-dec-90"), (768, 48, "-dec-512"), (1024, 48, "-dec-512"), (2048, 96, ""),
        (2048, 720, ""), (2560, 96, ""), (2560, 720, ""), (3072, 96, ""), (3072, 720, ""), (52, 16, "-dec-52"),
        (90, 30, "-dec-90"), (180, 60, "-dec-180"), (360, 60, "-dec-360"), (512, 48, "-dec-512"),
        (512, 96, "-dec-512"), (512, 336, "-dec-512"), (1024, 96, ""), (1024, 720, ""), (1536, 96, ""),
        (1536, 720, "")))


class Choice(NamedTuple):
    """The revision get_model loads, and the ``prediction_filter_length`` it sets (None: the full horizon)."""

    release: Release
    prediction_filter_length: int | None

    @property
    def revision(self) -> str:
        return self.release.revision


def releases_of(repo_id: str) -> tuple[Release, ...] | None:
    """The releases granite-tsfm's get_model chooses among for a repo id; None for a repo it has no table for."""
    if repo_id.startswith(R3_REPOS):
        return tuple(Release(key, "r3", repo_id, key, context, horizon) for key, context, horizon in R3_REVISIONS)
    for prefixes, organisation, release in REPO_RELEASES:
        if repo_id.startswith(prefixes):
            return tuple(r for r in RELEASES if r.repo_id.startswith(organisation) and r.release.startswith(release))
    return None


def choose_release(repo_id: str, context_length: int, prediction_length: int, freq: str | None = None,
                   freq_prefix_tuning: bool = False, prefer_l1_loss: bool = False, prefer_longer_context: bool = True,
                   force_return: str | None = None, use_lite: bool = False,
                   prefer_known_mappings: bool = True) -> Choice:
    """The release of ``repo_id`` granite-tsfm's ``get_model`` picks for a history of ``context_length`` steps
    and a forecast of ``prediction_length``, step by step as it does: r2.1 only for daily or coarser data
    (``freq``); the longest context that fits the history (the shortest with ``prefer_longer_context=False``);
    at contexts up to 512, ``-l1-`` / ``-ft-`` revisions when preferred; the shortest horizon that covers the
    request (then ``prediction_filter_length`` cuts it). ``force_return``: "zeropad" takes a model with a
    longer context than the history (it is padded), "rolling" one with a shorter horizon. ConfigError when
    nothing fits, naming what would. For the r3 repos, see ``choose_r3`` (``use_lite``,
    ``prefer_known_mappings``)."""
    if force_return is not None and force_return not in FORCE_RETURN:
        raise ConfigError(f"force_return must be one of {FORCE_RETURN} or None, got {force_return!r}")
    for name, value in (("context_length", context_length), ("prediction_length", prediction_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if repo_id.startswith(R3_REPOS):
        return choose_r3(repo_id, context_length, prediction_length, freq, freq_prefix_tuning, prefer_l1_loss,
                         prefer_longer_context, force_return, use_lite, prefer_known_mappings)
    available = releases_of(repo_id)
    if available is None:
        raise ConfigError(f"{repo_id}: not a TinyTimeMixer repo with known revisions (granite-timeseries-ttm-r1, "
                          "-ttm-r2, ibm-research/ttm-research-r2); pass revision= to load a branch of it")
    by_key = {r.key: r for r in available}
    shortest = min(r.context_length for r in available)
    # Step 1: only r2.1 for daily or coarser data (tokens 8 and up), on the ibm-granite repos.
    if FREQUENCY_TOKENS.get(freq, 0) >= 8 and available[0].repo_id.startswith("ibm-granite"):
        models = [r.key for r in available if "r2.1" in r.release]
    else:
        models = [r.key for r in available]
    # Step 2: contexts no longer than the history.
    if context_length < shortest:
        if force_return != "zeropad":
            raise ConfigError(f"context_length {context_length} is shorter than every {repo_id} revision's (the "
                              f"shortest is {shortest}); pass force_return='zeropad' to take a longer one and pad")
        selected = models
    else:
        selected, lowest, shortest_models = [], math.inf, []
        for key in models:
            if by_key[key].context_length <= context_length:
                selected.append(key)
            if by_key[key].context_length <= lowest:
                lowest = by_key[key].context_length
                shortest_models.append(key)
        if not selected:
            if force_return != "zeropad":
                raise ConfigError(f"no {repo_id} revision for frequency {freq!r} has a context_length of at most "
                                  f"{context_length}; pass force_return='zeropad' to take a longer one and pad")
            selected = shortest_models
    models = selected
    # Step 3: the l1 and ft preferences, for contexts up to 512.
    if models:
        contexts = [by_key[key].context_length for key in models]
        reference = min(context_length, max(contexts)) if prefer_longer_context else min(contexts)
        if reference <= LOW_RESOLUTION_MAX_CONTEXT:
            if prefer_l1_loss:
                models = [key for key in models if "-l1-" in key] or models
            if freq_prefix_tuning:
                models = [key for key in models if "-ft-" in key] or models
    # Steps 4-5: longest (or shortest) context first, then the shortest horizon.
    sign = -1 if prefer_longer_context else 1
    models.sort(key=lambda key: (sign * by_key[key].context_length, by_key[key].prediction_length))
    # Step 6: horizons that cover the request.
    if models:
        covering = [key for key in models if by_key[key].prediction_length >= prediction_length]
        if not covering:
            if force_return != "rolling":
                raise ConfigError(f"no {repo_id} revision forecasts {prediction_length} steps (at most "
                                  f"{max(by_key[key].prediction_length for key in models)}); pass "
                                  "force_return='rolling' to take the longest and forecast again from its forecast")
            longest = max(by_key[key].prediction_length for key in models)
            covering = [next(key for key in models if by_key[key].prediction_length == longest)]
        models = covering
    # Step 7: a frequency the ft revisions were not trained with.
    if freq_prefix_tuning and freq is not None and freq not in FREQUENCY_TOKENS:
        raise ConfigError(f"freq {freq!r} is not one of the frequencies TinyTimeMixer knows: {list(FREQUENCY_TOKENS)}")
    if not models:
        raise ConfigError(f"no {repo_id} revision fits context_length {context_length} and prediction_length "
                          f"{prediction_length}" + (" (a randomly initialised TTM must be trained first: rustml_nb "
                                                    "runs pre-trained weights only)" if force_return else ""))
    release = by_key[models[0]]
    return Choice(release, prediction_length if release.prediction_length > prediction_length else None)


def choose_r3(repo_id: str, context_length: int, prediction_length: int, freq: str | None = None,
              freq_prefix_tuning: bool = False, prefer_l1_loss: bool = False, prefer_longer_context: bool = True,
              force_return: str | None = None, use_lite: bool = False, prefer_known_mappings: bool = True) -> Choice:
    """The r3 revision granite-tsfm's ``get_model`` picks: with ``prefer_known_mappings``, the r3 counterpart
    of the r2 revision it would pick (``_known_r3``), else (or when there is none) the best-scoring revision
    (``_direct_r3``); the ``-lite-`` ones with ``use_lite``. Its horizon is cut to the request when longer
    (granite-tsfm sets prediction_filter_length to the request even when the horizon is shorter, which its
    config then refuses; here a shorter horizon stays, to forecast again from)."""
    key = None
    if prefer_known_mappings:
        try:
            base = choose_release("ibm-granite/granite-timeseries-ttm-r2", context_length, prediction_length, freq,
                                  freq_prefix_tuning, prefer_l1_loss, prefer_longer_context, force_return).release.key
        except ConfigError:
            base = None
        key = _known_r3(base, context_length, prediction_length, freq, use_lite) if base is not None else None
    if key is None:
        key = _direct_r3(context_length, prediction_length, prefer_longer_context, use_lite, force_return)
    release = next(r for r in releases_of(repo_id) if r.key == key)
    return Choice(release, prediction_length if release.prediction_length > prediction_length else None)


def _known_r3(base: str, context_length: int, prediction_length: int, freq: str | None, use_lite: bool) -> str | None:
    """granite-tsfm's _select_ttm_r3_revision_known_mapping: the r3 revision for the r2 revision ``base``."""
    def lite(key):
        return key.replace("-r3", "-lite-r3") if use_lite else key

    def by_context(short):
        return lite(short if context_length <= 512 else "768-48-dec-512-r3" if context_length < 756
                    else "1024-48-dec-512-r3")

    if context_length > 2500:
        return lite("2048-96-r3" if prediction_length <= 96 else "2048-720-r3")
    if base in ("52-16-ft-r2.1", "52-16-ft-l1-r2.1") or (freq is not None and freq.startswith("A")):
        return by_context("156-16-dec-52-r3")
    if base in ("90-30-ft-r2.1", "90-30-ft-l1-r2.1"):
        return by_context("512-30-dec-90-r3")
    if base in ("512-48-ft-r2.1", "512-48-ft-l1-r2.1"):
        return lite("768-48-dec-512-r3" if context_length < 756 else "1024-48-dec-512-r3")
    return {"1536-96-r2": lite("2048-96-r3"), "1536-720-r2": lite("2048-720-r3")}.get(base)


def _direct_r3(context_length: int, prediction_length: int, prefer_longer_context: bool, use_lite: bool,
               force_return: str | None) -> str:
    """granite-tsfm's _select_ttm_r3_revision_direct: among the (lite or full) r3 revisions whose context fits
    the history and horizon covers the request (with "zeropad" any that covers it, with "rolling" any that
    fits), the best by: horizon shortfall, not exactly the horizon, horizon excess, context excess, context
    fit, not decomposed (decomposed preferred up to 336 steps), then the longer context, the shorter horizon."""
    candidates = [(key, context, horizon) for key, context, horizon in R3_REVISIONS
                  if ("-lite-r3" in key) == bool(use_lite)]
    fitting = [c for c in candidates if c[1] <= context_length]
    covering = [c for c in fitting if c[2] >= prediction_length]
    if covering:
        candidates = covering
    elif force_return == "zeropad":
        candidates = [c for c in candidates if c[2] >= prediction_length]
        if not candidates:
            raise ConfigError(f"no r3 revision forecasts {prediction_length} steps, even with zero padding")
    elif force_return == "rolling":
        if not fitting:
            raise ConfigError(f"no r3 revision has a context_length of at most {context_length}; pass "
                              "force_return='zeropad' to take a longer one and pad")
        candidates = fitting
    else:
        raise ConfigError(f"no r3 revision has both a context_length of at most {context_length} and a horizon of "
                          f"at least {prediction_length}; pass force_return='zeropad' for a longer context, or "
                          "'rolling' for a shorter horizon to forecast again from")

    def score(candidate):
        _, context, horizon = candidate
        longer = prefer_longer_context
        return (max(0, prediction_length - horizon), horizon != prediction_length, max(0, horizon - prediction_length),
                max(0, context - context_length),
                max(0, context_length - context) if longer else abs(context_length - context),
                not (prediction_length <= 336 and "-dec-" in candidate[0]), -context if longer else context, horizon)

    return min(candidates, key=score)[0]


def frequency_token(step) -> int:
    """The frequency token of a time step (a pandas offset or frequency string), as granite-tsfm's
    preprocessor's ``get_frequency_token`` finds it: the string itself, its pandas offset's name, or that of
    the Timedelta it spells; "oov" (0) when none is known, with a warning."""
    import pandas as pd

    name = step if isinstance(step, str) else step.freqstr
    if name in FREQUENCY_TOKENS:
        return FREQUENCY_TOKENS[name]
    try:
        offset = pd.tseries.frequencies.to_offset(name).freqstr
    except ValueError:
        try:
            offset = pd.tseries.frequencies.to_offset(pd.Timedelta(name)).freqstr
        except ValueError:
            raise InputError(f"{name!r} is not a pandas frequency") from None
    if offset in FREQUENCY_TOKENS:
        return FREQUENCY_TOKENS[offset]
    warnings.warn(f"frequency {name!r} has no TinyTimeMixer frequency token; using 'oov' (0), as granite-tsfm does",
                  RustmlWarning, stacklevel=3)
    return FREQUENCY_TOKENS["oov"]


def get_model(model_path: str, context_length: int | None = None, prediction_length: int | None = None, *,
              freq: str | None = None, freq_prefix_tuning: bool = False, prefer_l1_loss: bool = False,
              prefer_longer_context: bool = True, force_return: str | None = None, model_revision: str | None = None,
              use_lite: bool = False, prefer_known_mappings: bool = True, dtype: str = "float32", cache_dir=None,
              token=None, local_files_only: bool = False):
    """A TinyTimeMixer for a history of ``context_length`` steps and a forecast of ``prediction_length``, as
    granite-tsfm's ``get_model`` chooses it: for a granite TTM repo (``ibm-granite/granite-timeseries-ttm-r1``,
    ``-ttm-r2``, ``-ttm-r3``, ``ibm-research/ttm-research-r2``, ``ibm-research/ttm-r3``) the revision
    ``choose_release`` picks (a decomposed model for the r3 ``-dec-`` ones), loaded with
    ``prediction_filter_length = prediction_length`` when its horizon is longer. ``model_revision`` (or a
    folder, or another repo) loads that as it is, with ``prediction_filter_length = prediction_length`` when
    one is given. The other arguments are ``choose_release``'s; the rest ``rustml_nb.from_pretrained``'s."""
    from ...registry import from_pretrained

    revision, filter_length = model_revision, prediction_length
    if model_revision is None and releases_of(str(model_path)) is not None:
        if context_length is None or prediction_length is None:
            raise ConfigError("give context_length and prediction_length to choose among the revisions of "
                              f"{model_path}")
        choice = choose_release(str(model_path), context_length, prediction_length, freq, freq_prefix_tuning,
                                prefer_l1_loss, prefer_longer_context, force_return, use_lite, prefer_known_mappings)
        revision, filter_length = choice.revision, choice.prediction_filter_length
    overrides = {} if filter_length is None else {"prediction_filter_length": filter_length}
    return from_pretrained(model_path, revision, dtype, cache_dir, token, local_files_only, **overrides)
