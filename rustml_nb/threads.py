"""The threads a forward pass runs on, and what they share.

A forward pass splits its series among ``get_num_threads()`` tasks, each running its share in steps of calls
into compiled kernels that release the GIL, on a persistent pool of as many worker threads, and on the
calling thread itself when a compute slot is free. A task done early takes over the steps another has not
begun (``Shares``), so a core slowed by other work does not hold the call up. Every task holds one of
``get_num_threads()`` slots while it runs and uses that slot's scratch buffers (``scratch``). Nothing about
a call lives on the model, so a model object can be called from any number of threads at once and every call
computes exactly what it computes alone. Calls from several threads take turns for the slots, and when the
slots are taken a caller leaves all its tasks to the workers, so no more threads compute than there are
slots: 16 calls of batch 8 from 4 threads take as long as one after another (1.2x as long with scratch per
thread and every caller computing). The scratch in use is one set per slot, whatever the number of calling
threads. No Numba threading layer is involved (the kernels have no ``prange``), so none can abort on
concurrent entry.

The kernels call no BLAS (their matrix products are ``kernels.gemm``'s), so no BLAS thread pool competes
with these threads for the cores, and the program's BLAS settings are neither read nor changed.
"""

from __future__ import annotations

import os
import queue
from queue import Empty
import threading

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
    """Daemon worker threads taking (task, arguments, done, failures) from one queue. Lighter than a
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
            task, arguments, done, failure = self.queue.get()
            try:
                task(*arguments)
            except BaseException as error:  # handed to the caller, raised there
                failure.append(error)
            finally:
                done.release()


_pool = _Pool()


def _forget_pool_after_fork():
    global _pool
    _pool = _Pool()  # the workers did not survive the fork


os.register_at_fork(after_in_child=_forget_pool_after_fork)


class _Slots:
    """``count`` compute slots, each with its own scratch buffers; a task holds one while it runs."""

    def __init__(self, count: int):
        self.count = count
        self.free = queue.SimpleQueue()
        self.buffers = [{} for _ in range(count)]
        for slot in range(count):
            self.free.put(slot)


_slots = _Slots(0)
_slots_lock = threading.Lock()
_local = threading.local()
SCRATCH_KEYS_PER_SLOT = 4  # models of different shapes and dtypes a slot keeps scratch for


def _current_slots() -> _Slots:
    global _slots
    count = get_num_threads()
    with _slots_lock:
        if _slots.count != count:
            _slots = _Slots(count)
        return _slots


def _in_slot(task, index, slot=None):
    slots = _current_slots()
    if slot is None:
        slot = slots.free.get()
    _local.buffers = slots.buffers[slot]
    try:
        task(index)
    finally:
        _local.buffers = None
        slots.free.put(slot)


def run_tasks(task, count: int) -> None:
    """``task(i)`` for i in range(count), each holding a slot (``_Slots``) while it runs: 1.. on the pool's
    workers, 0 on the calling thread if a slot is free, else on a worker too. Returns when all are done; the
    first exception any raised is raised here."""
    if count <= 1:
        _in_slot(task, 0)
        return
    pool = _pool
    # As many workers as slots, though one call needs count - 1: when calls from several threads wait on
    # their queued tasks, the workers alone can then keep every core busy.
    pool.ensure(get_num_threads())
    failures: list[BaseException] = []
    waiting = []

    def queue(index):
        done = threading.Lock()
        done.acquire()
        pool.queue.put((_in_slot, (task, index), done, failures))
        waiting.append(done)

    for index in range(1, count):
        queue(index)
    # The calling thread computes task 0 itself when a slot is free (no hand-off on the way to the result);
    # when other calls hold the slots it queues it too, so only the workers compute and the cores are not
    # shared among more threads than slots.
    try:
        slot = _current_slots().free.get_nowait()
    except Empty:
        queue(0)
    else:
        try:
            _in_slot(task, 0, slot)
        except BaseException as error:
            failures.insert(0, error)
    for done in waiting:
        done.acquire()
    if failures:
        raise failures[0]


class Shares:
    """``units`` split into ``tasks`` equal ranges, each taken by its task from the front in steps of at most
    ``step`` units (``take``). A task whose range is used up takes the later half of the largest range
    nobody has taken yet, so that when one core runs slower (another program on it, a slower spell of a
    shared machine) the other takes over part of its work instead of waiting for it. With equal cores no
    task takes from another until the last steps. One object per call: nothing is shared between calls."""

    def __init__(self, units: int, tasks: int, step: int):
        self.ranges = [[task * units // tasks, (task + 1) * units // tasks] for task in range(tasks)]
        self.step = max(int(step), 1)
        self.lock = threading.Lock()

    def take(self, task: int):
        """The next (first, last) units for ``task`` to run, or None when nothing is left to take."""
        with self.lock:
            own = self.ranges[task]
            if own[0] >= own[1]:
                largest = max(self.ranges, key=lambda untaken: untaken[1] - untaken[0])
                half = (largest[1] - largest[0]) // 2
                if half == 0:  # one unit left at most: its owner is about to take it
                    return None
                own[0], own[1] = largest[1] - half, largest[1]
                largest[1] -= half
            first = own[0]
            own[0] = min(own[1], first + self.step)
            return first, own[0]


def scratch(key, make):
    """The running task's slot's buffers for ``key``, made by ``make()`` on first use and kept for the slot's
    ``SCRATCH_KEYS_PER_SLOT`` most recent keys (or until ``release_scratch``). Only inside ``run_tasks``."""
    mine = getattr(_local, "buffers", None)
    if mine is None:
        raise RuntimeError("rustml_nb.threads.scratch is for tasks that run_tasks runs")
    found = mine.pop(key, None)
    if found is None:
        while len(mine) >= SCRATCH_KEYS_PER_SLOT:
            mine.pop(next(iter(mine)))
        found = make()
    mine[key] = found  # most recent last
    return found


def release_scratch(key=None) -> None:
    """Let every slot's buffers for ``key`` (None: all keys) go; a task using them keeps its own."""
    for buffers in _current_slots().buffers:
        for found in [k for k in list(buffers) if key is None or k == key]:
            buffers.pop(found, None)
