"""Transport: a Hub repo id -> a ``ModelBundle``, through ``huggingface_hub`` and its cache.

Files land in huggingface_hub's own cache (``HF_HOME`` / ``HF_HUB_CACHE`` / ``cache_dir``), so a model
transformers has cached is reused and vice versa. Only what the model needs is fetched: ``config.json``
and either ``model.safetensors`` or the shard index and the shards it names. A revision already complete
in the cache is served from it without any request; ``force_download=True`` fetches again.
"""

from __future__ import annotations

import os
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants, errors as hub_errors
from huggingface_hub.utils import tqdm as hub_tqdm

from .bundle import CONFIG_NAME, PYTORCH_WEIGHTS, ModelBundle
from .errors import MissingFileError, RustmlError
from .formats import ONNX_SINGLE, SAFETENSORS_INDEX, SAFETENSORS_SINGLE, read_weight_map


class HubError(RustmlError):
    """Fetching from the Hub failed; the message names the repo, revision and file."""


class RepoNotFoundError(HubError, FileNotFoundError):
    """The repo does not exist, or the token may not see it."""


class RevisionNotFoundError(HubError, FileNotFoundError):
    """The repo exists, the revision (branch, tag or commit) does not."""


class HubFileNotFoundError(HubError, MissingFileError):
    """A file the model needs is not in the repo at that revision."""


class HubConnectionError(HubError, ConnectionError):
    """The server could not be reached, answered with an error, or broke off a download."""


class NotCachedError(HubError, FileNotFoundError):
    """Offline (``local_files_only`` or ``HF_HUB_OFFLINE``) and the revision is not complete in the cache."""


class _SilentTqdm(hub_tqdm):
    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


class _ShownTqdm(hub_tqdm):
    """Shown even when stderr is not a terminal (tqdm's own default hides it there)."""

    def __init__(self, *args, **kwargs):
        kwargs["disable"] = False
        super().__init__(*args, **kwargs)


def is_offline() -> bool:
    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


class HubApi:
    """Download checkpoints from the Hub (or any server speaking its API, via ``endpoint``): safetensors
    weights with their config.json, or, in a repo holding only an ONNX export, model.onnx, the files its
    weights live in and config.json when there is one.

    ``progress``: True shows huggingface_hub's progress bars, False hides them; None (default) shows them
    only when stderr is a terminal. ``HF_HUB_DISABLE_PROGRESS_BARS=1`` hides them in every case.
    """

    def __init__(self, cache_dir=None, token=None, endpoint=None, progress: bool | None = None):
        self.cache_dir = str(cache_dir) if cache_dir is not None else constants.HF_HUB_CACHE
        self.token = token
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
        self.progress = progress
        self._api = huggingface_hub.HfApi(endpoint=self.endpoint, token=token)

    def download_model(self, repo_id: str, revision: str | None = None, local_files_only: bool = False,
                       force_download: bool = False) -> ModelBundle:
        revision = revision or "main"
        where = f"{repo_id}@{revision}"
        if not force_download:
            folder = self.cached_snapshot(repo_id, revision)
            if folder is not None:
                return ModelBundle.from_dir(folder)
        if local_files_only or is_offline():
            raise NotCachedError(
                f"{where} is not complete in the cache {self.cache_dir} and offline mode is on "
                f"({'local_files_only=True' if local_files_only else 'HF_HUB_OFFLINE'}); download it once online"
            )
        with _translated_errors(where, "(repo listing)"):
            info = self._api.model_info(repo_id, revision=revision)
        files = {sibling.rfilename for sibling in info.siblings or ()}
        commit = info.sha or revision
        onnx_only = ONNX_SINGLE in files and not files & {SAFETENSORS_INDEX, SAFETENSORS_SINGLE}
        if CONFIG_NAME not in files and not onnx_only:  # an ONNX export's config can come from its graph
            raise HubFileNotFoundError(f"{where}: the repo has no {CONFIG_NAME}")
        fetched = None
        if SAFETENSORS_INDEX in files:
            index_path = self._fetch(repo_id, SAFETENSORS_INDEX, commit, where)
            shards = sorted(set(read_weight_map(index_path).values()))
            absent = [shard for shard in shards if shard not in files]
            if absent:
                raise HubFileNotFoundError(f"{where}: {SAFETENSORS_INDEX} names shards the repo lacks: {absent}")
            weights = shards
        elif SAFETENSORS_SINGLE in files:
            weights = [SAFETENSORS_SINGLE]
        elif onnx_only:  # an exported model: the graph, then the files its weights live in
            from .formats.onnx import OnnxGraph

            fetched = self._fetch(repo_id, ONNX_SINGLE, commit, where, force_download)
            weights = OnnxGraph(fetched).external_files
            absent = [name for name in weights if name not in files]
            if absent:
                raise HubFileNotFoundError(f"{where}: {ONNX_SINGLE} keeps weights in files the repo lacks: {absent}")
        elif files & set(PYTORCH_WEIGHTS):
            raise HubFileNotFoundError(
                f"{where} has only PyTorch pickle weights (pytorch_model.bin), which rustml_nb never loads: "
                "unpickling can run arbitrary code and needs torch. Convert once with transformers: "
                "`AutoModel.from_pretrained(repo).save_pretrained(folder, safe_serialization=True)`, "
                "or use the repo's safetensors revision if it has one (often `revision=\"refs/pr/1\"`)."
            )
        else:
            raise HubFileNotFoundError(f"{where}: no {SAFETENSORS_SINGLE} or {SAFETENSORS_INDEX} in the repo")
        if CONFIG_NAME in files:
            fetched = self._fetch(repo_id, CONFIG_NAME, commit, where, force_download)
        for name in weights:
            self._fetch(repo_id, name, commit, where, force_download)
        snapshot = Path(fetched).parent
        if revision != commit:  # files were fetched by commit; record what the branch or tag points to
            ref = snapshot.parents[1] / "refs" / revision
            ref.parent.mkdir(parents=True, exist_ok=True)
            ref.write_text(commit)
        return ModelBundle.from_dir(snapshot)

    def cached_snapshot(self, repo_id: str, revision: str) -> Path | None:
        """The cache folder holding a complete checkpoint for this revision, without any request."""
        for name in (CONFIG_NAME, ONNX_SINGLE):  # an ONNX export may come without config.json
            found = huggingface_hub.try_to_load_from_cache(repo_id, name, self.cache_dir, revision)
            if isinstance(found, str):
                break
        else:
            return None
        folder = Path(found).parent
        index = folder / SAFETENSORS_INDEX
        if index.is_file():
            try:
                shards = set(read_weight_map(index).values())
            except RustmlError:
                return None
            return folder if all((folder / shard).is_file() for shard in shards) else None
        if (folder / SAFETENSORS_SINGLE).is_file():
            return folder
        if (folder / ONNX_SINGLE).is_file():
            from .formats.onnx import OnnxGraph

            try:
                needed = OnnxGraph(folder / ONNX_SINGLE).external_files
            except RustmlError:
                return None
            return folder if all((folder / name).is_file() for name in needed) else None
        return None

    def _fetch(self, repo_id: str, filename: str, commit: str, where: str, force_download: bool = False) -> str:
        with _translated_errors(where, filename):
            return huggingface_hub.hf_hub_download(
                repo_id, filename, revision=commit, cache_dir=self.cache_dir, token=self.token,
                endpoint=self.endpoint, force_download=force_download,
                tqdm_class={None: None, True: _ShownTqdm, False: _SilentTqdm}[self.progress],
            )


class _translated_errors:
    """Turn huggingface_hub's and the network's exceptions into ours, naming repo, revision and file."""

    def __init__(self, where: str, filename: str):
        self.where, self.filename = where, filename

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if error is None or isinstance(error, RustmlError):
            return False
        what = f"{self.where}, {self.filename}"
        if isinstance(error, hub_errors.RevisionNotFoundError):
            raise RevisionNotFoundError(f"{what}: revision not found") from error
        if isinstance(error, hub_errors.RepositoryNotFoundError):
            raise RepoNotFoundError(f"{what}: repository not found (or not visible with this token)") from error
        if isinstance(error, hub_errors.LocalEntryNotFoundError):  # also an EntryNotFoundError: test it first
            cause = error.__cause__ or error.__context__
            detail = f"{type(cause).__name__}: {cause}" if cause else str(error)
            raise HubConnectionError(f"{what}: could not download and the file is not cached ({detail})") from error
        if isinstance(error, hub_errors.EntryNotFoundError):
            raise HubFileNotFoundError(f"{what}: file not found in the repo") from error
        if isinstance(error, hub_errors.HfHubHTTPError):
            status = getattr(getattr(error, "response", None), "status_code", "?")
            raise HubConnectionError(f"{what}: the server answered HTTP {status}") from error
        if isinstance(error, (OSError, ConnectionError)) or "httpx" in type(error).__module__:
            raise HubConnectionError(f"{what}: download failed ({type(error).__name__}: {error})") from error
        return False
