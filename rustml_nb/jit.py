"""How kernels are compiled and where the compiled code is kept.

``kernel`` is Numba's ``njit`` with the options every kernel shares, and a disk cache that never stands
in the way. With ``NUMBA_CACHE_DIR`` set, that folder is the cache. Otherwise compiled code is loaded from
the package's own ``__pycache__`` or the user-wide ``~/.cache/numba``, whichever holds it and can be
read, and saved to the first of them that can be written. So a cache built ahead of time into a read-only
install (``rustml-nb compile``, run as root in a Dockerfile) serves every other user of that install, and
where no folder can be written the kernels still compile, in memory, with one warning naming
``NUMBA_CACHE_DIR``. Decorating never compiles and never touches the cache: importing rustml_nb cannot
fail for cache reasons, nor can a stale or corrupt cache entry (it is compiled again instead).

A compiled kernel holds the code of every kernel it calls, so an entry is fresh only while its own module,
the shared kernels (``rustml_nb/kernels``) and this module are unchanged: its stamp hashes all of them.
(Numba's own stamp is its module's time and size alone, which kept a model's kernels running the old
version of a shared kernel after an edit of that kernel.)

While a kernel compiles (a cache miss) one line on stderr says so, once per dtype and process, when
stderr is a terminal; ``RUSTML_NB_COMPILE_NOTICE=always`` shows it anywhere, ``never`` nowhere.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import sys
import tempfile
import threading

from numba import njit
from numba.core import config as numba_config
from numba.core import event
from numba.core.caching import FunctionCache, _CacheLocator, _SourceFileBackedLocatorMixin

log = logging.getLogger("rustml_nb")

# Every kernel: NumPy's error model (division by zero gives inf/nan as in torch, and no zero check in each
# division, which kept LLVM from vectorizing loops such as GELU's), and the GIL released, so that the
# threads of rustml_nb.threads run kernels side by side.
KERNEL_OPTIONS = dict(nogil=True, error_model="numpy")
# What the first run costs on a 2-core x86_64 machine with an empty cache (benchmarks/cold_start.py).
TYPICAL_FIRST_COMPILE = "15-30 s"


PACKAGE = os.path.dirname(os.path.abspath(__file__))


def cache_locations() -> list[tuple[str, str]]:
    """[(label, folder)] where compiled kernels are looked for, in order: ``NUMBA_CACHE_DIR`` alone when
    it is set, else the package (each kernel beside its module, in that folder's ``__pycache__``, as
    Python keeps bytecode) and the user-wide cache folder (in which, as in ``NUMBA_CACHE_DIR``, each
    source folder gets a subfolder, as Numba names them)."""
    if numba_config.CACHE_DIR:
        return [("NUMBA_CACHE_DIR", numba_config.CACHE_DIR)]
    from numba.misc.appdirs import AppDirs

    return [("package", PACKAGE), ("user", AppDirs(appname="numba", appauthor=False).user_cache_dir)]


def cache_folder(label: str, root: str, source: str) -> str:
    """Where the kernels of the module at ``source`` live under one of ``cache_locations()``."""
    if label == "package":
        return os.path.join(os.path.dirname(source), "__pycache__")
    return os.path.join(root, _Located.get_suitable_cache_subpath(source))


def _writable(folder: str) -> bool:
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
        return True
    except OSError:
        return False


def kernel_dependencies(source: str) -> list[str]:
    """The files whose code a kernel defined in ``source`` can contain: its own module, every shared kernel
    module and this one."""
    shared = os.path.join(PACKAGE, "kernels")
    modules = sorted(os.path.join(shared, name) for name in os.listdir(shared) if name.endswith(".py"))
    return [os.path.abspath(source), *modules, os.path.join(PACKAGE, "jit.py")]


@functools.lru_cache(maxsize=None)
def source_stamp(source: str) -> str:
    """A kernel's cache stamp: a hash of the contents of ``kernel_dependencies(source)``."""
    digest = hashlib.sha256()
    for path in kernel_dependencies(source):
        with open(path, "rb") as file:
            name = os.path.relpath(path, PACKAGE) if path.startswith(PACKAGE + os.sep) else os.path.basename(path)
            digest.update(name.encode() + b"\0" + file.read() + b"\0")  # where the install is does not matter
    return digest.hexdigest()


class _Located(_SourceFileBackedLocatorMixin, _CacheLocator):
    """A Numba cache locator for one given folder (Numba's own locators each pick theirs)."""

    def __init__(self, py_func, py_file, folder):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._folder = folder

    def get_source_stamp(self):
        return source_stamp(self._py_file)

    def get_cache_path(self):
        return self._folder

    def ensure_cache_path(self):
        os.makedirs(self._folder, exist_ok=True)


def _cache_in(py_func, folder: str) -> FunctionCache:
    """Numba's own FunctionCache for ``py_func``, kept in ``folder``."""

    class Locator(_Located):
        @classmethod
        def from_function(cls, function, py_file):
            return cls(function, py_file, folder)

    class Impl(FunctionCache._impl_class):
        _locator_classes = [Locator]

    class Cache(FunctionCache):
        _impl_class = Impl

    return Cache(py_func)


class _LayeredCache:
    """Numba's cache interface over several folders: load from the first that has the entry, save to the
    first that can be written (if any)."""

    def __init__(self, py_func):
        self._py_func = py_func
        self._caches = None
        self._writable = None
        self._lock = threading.Lock()

    def _resolve(self):
        with self._lock:
            if self._caches is None:
                source = os.path.abspath(self._py_func.__code__.co_filename)
                caches, writable = [], None
                for label, root in cache_locations():
                    folder = cache_folder(label, root, source)
                    if writable is None and _writable(folder):
                        writable = _cache_in(self._py_func, folder)
                        caches.append(writable)
                    elif os.access(folder, os.R_OK | os.X_OK):
                        caches.append(_cache_in(self._py_func, folder))
                self._caches, self._writable = caches, writable
        return self._caches

    @property
    def cache_path(self):
        caches = self._resolve()
        return (self._writable or caches[0]).cache_path if caches else None

    def load_overload(self, sig, target_context):
        # Numba's own FunctionCache.load_overload first refreshes the target context: it imports every lowering
        # module and installs every typing declaration Numba has, ~0.07 s of a 0.6 s warm start. Running cached
        # code needs only what registers the symbols it links against: the runtime (NRT, the allocator; a
        # null symbol crashes) and the hash secrets (imported with numba.cpython.hashing); the C helpers and
        # libm are registered when the context is made. A compile, on a miss, refreshes both contexts itself.
        # tests/test_cache.py runs every family from a warm cache in new processes.
        _runtime_for_cached_code(target_context)
        for cache in self._resolve():
            try:
                loaded = cache._load_overload(sig, target_context)
            except Exception:  # an unreadable, truncated or foreign entry: compile instead
                loaded = None
            if loaded is not None:
                return loaded
        return None

    def save_overload(self, sig, data):
        self._resolve()
        if self._writable is None:
            _warn_no_cache()
            return
        try:
            self._writable.save_overload(sig, data)
        except Exception as error:  # disk full, a folder made read-only meanwhile, a stale index: keep it in memory
            if _once(("save failed", self._writable.cache_path)):
                log.warning("rustml_nb: could not save compiled kernels to %s (%s: %s); they are compiled in memory",
                            self._writable.cache_path, type(error).__name__, error)

    def enable(self):
        pass

    def disable(self):
        pass

    def flush(self):
        pass


def _runtime_for_cached_code(target_context):
    import numba.cpython.hashing  # noqa: F401  registers the _numba_hashsecret_* symbols
    from numba.core.runtime import rtsys

    rtsys.initialize(target_context)


_warned = set()
_warned_lock = threading.Lock()


def _once(key) -> bool:
    with _warned_lock:
        if key in _warned:
            return False
        _warned.add(key)
        return True


def _warn_no_cache():
    if _once("no cache"):
        places = ", ".join("the package's __pycache__ folders" if label == "package" else folder
                           for label, folder in cache_locations())
        log.warning("rustml_nb: no writable cache folder (%s): kernels are compiled in memory in every process; "
                    "set NUMBA_CACHE_DIR to a writable folder to keep them", places)


def kernel(function=None, **options):
    """``@kernel`` (or ``@kernel(inline="always")``): ``numba.njit`` with ``KERNEL_OPTIONS`` and the layered
    disk cache. Nothing is compiled until the first call."""

    def decorate(py_func):
        dispatcher = njit(**{**KERNEL_OPTIONS, **options})(py_func)
        dispatcher._cache = _LayeredCache(py_func)
        return dispatcher

    return decorate(function) if function is not None else decorate


# --------------------------------------------------------------------------------------------------
# The compile notice
# --------------------------------------------------------------------------------------------------
def _notice_wanted() -> bool:
    setting = os.environ.get("RUSTML_NB_COMPILE_NOTICE", "auto").lower()
    if setting in ("always", "1", "yes", "true"):
        return True
    if setting in ("never", "0", "no", "false"):
        return False
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class _CompileNotice(event.Listener):
    """Prints one line when a rustml_nb kernel starts compiling for a dtype not compiled before."""

    def on_start(self, ev):
        data = ev.data or {}
        dispatcher = data.get("dispatcher")
        module = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
        if not module.startswith("rustml_nb"):
            return
        dtypes = sorted({str(arg.dtype) for arg in data.get("args", ()) if hasattr(arg, "dtype")
                         and str(arg.dtype).startswith("float")})
        if dtypes and _notice_wanted() and _once(("notice", dtypes[0])):
            source = os.path.abspath(dispatcher.py_func.__code__.co_filename)
            where = next((f"; kept in {folder}" for folder in (cache_folder(label, root, source)
                                                               for label, root in cache_locations())
                          if _writable(folder)), "")
            print(f"rustml_nb: compiling kernels for {dtypes[0]} on first use ({TYPICAL_FIRST_COMPILE}, "
                  f"once){where}", file=sys.stderr, flush=True)

    def on_end(self, ev):
        pass


event.register("numba:compile", _CompileNotice())
