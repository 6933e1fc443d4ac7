"""The threads a forward pass runs on, and what they share.

A forward pass splits its series among ``get_num_threads()`` tasks: the calling thread runs the first and
a persistent pool of worker threads the others, each task one call into a compiled kernel that releases
the GIL (``encode_units``). Nothing about a call lives on the model: each thread keeps its own scratch
(``scratch``), so a model object can be called from any number of threads at once and every call computes
exactly what it computes alone. Calls from several threads queue for the same workers, so running them
side by side costs about what running them one after another does. No Numba threading layer is involved
(the kernels have no ``prange``), so none can abort on concurrent entry.

The kernels' threads call BLAS themselves (``np.dot`` inside compiled code goes to SciPy's BLAS). A BLAS
that also started threads for each call would have them fight ours for the same cores (batch 1 of the
granite shape: 25 ms median instead of 3 ms), so while any forward pass runs, every BLAS library loaded in
the process is set to one thread, through threadpoolctl, and set back when the last one ends.
"""

from __future__ import annotations

import os
import queue
import threading
import weakref
from contextlib import contextmanager

import scipy.linalg.cython_blas  # noqa: F401  the BLAS Numba's np.dot calls: loaded before libraries are listed
from threadpoolctl import ThreadpoolController

from .errors import ConfigError


def _default_threads() -> int:
    setting = os.environ.get("RUSTML_NB_NUM_THREADS")
    if setting:
        try:
            count = int(setting)
        except ValueError:
            raise ConfigError(f"RUSTML_NB_NUM_THREADS must be a positive integer, got {setting!r}") from None
        if count < 1:
            raise ConfigError(f"RUSTML_NB_NUM_THREADS must be a positive integer, got {setting!r}")
        return count
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_threads = None


def get_num_threads() -> int:
    """How many threads a forward pass uses: ``set_num_threads``, else ``RUSTML_NB_NUM_THREADS``, else the
    cores this process may run on."""
    global _threads
    if _threads is None:
        _threads = _default_threads()
    return _threads


def set_num_threads(count: int) -> None:
    """Use ``count`` threads per forward pass (the calling thread and ``count - 1`` workers)."""
    global _threads
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"the thread count must be a positive integer, got {count!r}")
    _threads = count


class _Pool:
    """Daemon worker threads taking (task, index, done, failure) from one queue. Lighter than a
    ThreadPoolExecutor (no Future per task): a hand-off costs ~25 us instead of ~50, which is 2% of a
    batch-1 forecast."""

    def __init__(self):
        self.queue = queue.SimpleQueue()
        self.workers = 0
        self.lock = threading.Lock()

    def ensure(self, count: int) -> None:
        with self.lock:
            while self.workers < count:
                threading.Thread(target=self._work, name=f"rustml_nb-{self.workers}", daemon=True).start()
                self.workers += 1

    def _work(self):
        while True:
            task, index, done, failure = self.queue.get()
            try:
                task(index)
            except BaseException as error:  # handed to the caller, raised there
                failure.append(error)
            finally:
                done.release()


_pool = _Pool()


def _forget_pool_after_fork():
    global _pool
    _pool = _Pool()  # the workers did not survive the fork


os.register_at_fork(after_in_child=_forget_pool_after_fork)


def run_tasks(task, count: int) -> None:
    """``task(i)`` for i in range(count): 0 on the calling thread, the others on the pool's workers. Returns
    when all are done; the first exception any raised is raised here."""
    if count <= 1:
        task(0)
        return
    pool = _pool
    pool.ensure(count - 1)
    failures: list[BaseException] = []
    waiting = []
    for index in range(1, count):
        done = threading.Lock()
        done.acquire()
        pool.queue.put((task, index, done, failures))
        waiting.append(done)
    try:
        task(0)
    except BaseException as error:
        failures.insert(0, error)
    for done in waiting:
        done.acquire()
    if failures:
        raise failures[0]


# --------------------------------------------------------------------------------------------------
# Scratch: one set per thread, kept across calls
# --------------------------------------------------------------------------------------------------
class _Scratch:
    """One thread's scratch buffers by key (an object, so the registry can hold it weakly)."""

    __slots__ = ("buffers", "__weakref__")

    def __init__(self):
        self.buffers = {}


_local = threading.local()
_all_scratch: "weakref.WeakSet[_Scratch]" = weakref.WeakSet()
_scratch_lock = threading.Lock()
SCRATCH_KEYS_PER_THREAD = 4  # models of different shapes and dtypes a thread keeps scratch for


def scratch(key, make):
    """This thread's buffers for ``key``, made by ``make()`` on first use. A thread keeps them for its
    ``SCRATCH_KEYS_PER_THREAD`` most recent keys; they go with the thread, or with ``release_scratch``."""
    holder = getattr(_local, "scratch", None)
    if holder is None:
        holder = _local.scratch = _Scratch()
        with _scratch_lock:
            _all_scratch.add(holder)
    mine = holder.buffers
    found = mine.pop(key, None)
    if found is None:
        while len(mine) >= SCRATCH_KEYS_PER_THREAD:
            mine.pop(next(iter(mine)))
        found = make()
    mine[key] = found  # most recent last
    return found


def release_scratch(key=None) -> None:
    """Let every thread's buffers for ``key`` (None: all keys) go; a call using them keeps its own."""
    with _scratch_lock:
        everyone = list(_all_scratch)
    for holder in everyone:
        for found in [k for k in list(holder.buffers) if key is None or k == key]:
            holder.buffers.pop(found, None)


# --------------------------------------------------------------------------------------------------
# BLAS on one thread while any forward pass runs
# --------------------------------------------------------------------------------------------------
_blas_libraries = None
_blas_lock = threading.Lock()
_blas_users = 0
_blas_previous: list[int] = []


def _blas():
    """[(library, its thread-count setter)] for every BLAS loaded in the process.

    threadpoolctl lets only the first Python thread that limits OpenBLAS change it later and silently
    ignores the others (its "controlling thread"), so a model first called from one thread and then from
    another ran its GEMMs multi-threaded there, fighting the kernels' threads and rounding differently.
    The guard below is the one place that changes the count, counted across threads, so it calls the
    library's own setter where threadpoolctl keeps it."""
    global _blas_libraries
    if _blas_libraries is None:
        _blas_libraries = [(library, getattr(library, "_real_set_num_threads", library.set_num_threads))
                           for library in ThreadpoolController().lib_controllers if library.user_api == "blas"]
    return _blas_libraries


@contextmanager
def single_threaded_blas():
    """Every loaded BLAS on one thread inside the block; the thread counts found by the first of several
    overlapping blocks are restored when the last one ends."""
    global _blas_users, _blas_previous
    with _blas_lock:
        if _blas_users == 0:
            libraries = _blas()
            _blas_previous = [library.get_num_threads() for library, _ in libraries]
            for _, set_threads in libraries:
                set_threads(1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for (_, set_threads), threads in zip(_blas(), _blas_previous):
                    set_threads(threads)
