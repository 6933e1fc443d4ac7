"""One model object called from many threads at once: every call returns exactly what it returns alone."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, strategies as st

import rustml_nb
from rustml_nb import demo, threads

# (dtype, batch) of each kind of call the threads make: mixed sizes, both dtypes, blocks split differently.
CALLS = [("float32", 1), ("float32", 8), ("float32", 64), ("float32", 3), ("float32", 17), ("float64", 2),
         ("float64", 33), ("float32", 1)]


@pytest.fixture(scope="module")
def models():
    return {dtype: rustml_nb.from_pretrained(demo.MODEL_PATH, dtype=dtype) for dtype in ("float32", "float64")}


def inputs(model, batch, seed):
    history, _ = demo.test_slice()
    rng = np.random.default_rng(seed)
    base = history.to_numpy()[None]
    values = base + rng.normal(0, 2, (batch, *base.shape[1:]))
    values[rng.random(values.shape) < 0.02] = np.nan  # some missing values too
    return values.astype(model.dtype)


def test_concurrent_calls_equal_calls_made_alone(models):
    jobs = [(dtype, batch, seed) for seed, (dtype, batch) in enumerate(CALLS * 4)]
    data = {job: inputs(models[job[0]], job[1], job[2]) for job in jobs}
    alone = {job: models[job[0]](data[job]).prediction_outputs for job in jobs}
    history, _ = demo.test_slice()
    frame_alone = models["float32"].forecast(history)

    def call(job):
        if job == "frame":
            return job, models["float32"].forecast(history)
        return job, models[job[0]](data[job]).prediction_outputs

    for _ in range(3):
        with ThreadPoolExecutor(max_workers=6) as pool:
            results = list(pool.map(call, jobs + ["frame"] * 4))
        for job, result in results:
            if job == "frame":
                pd.testing.assert_frame_equal(result, frame_alone, check_exact=True)
            else:
                np.testing.assert_array_equal(result, alone[job], err_msg=f"{job} differs when run beside others")


def test_separate_models_and_thread_counts_side_by_side(models):
    """Two model objects of the same checkpoint, and a thread count changed between calls, agree bit for bit."""
    other = rustml_nb.from_pretrained(demo.MODEL_PATH)
    values = inputs(other, 40, 7)
    expected = models["float32"](values).prediction_outputs
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda m: m(values).prediction_outputs, [other, models["float32"]] * 4))
    for result in results:
        np.testing.assert_array_equal(result, expected)


def test_an_error_in_one_call_leaves_the_others_alone(models):
    model = models["float32"]
    good = inputs(model, 5, 1)
    bad = good.copy()[:, :10]  # wrong length
    expected = model(good).prediction_outputs

    def call(values):
        try:
            return model(values).prediction_outputs
        except rustml_nb.InputError as error:
            return error

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(call, [good, bad] * 6))
    for values, result in zip([good, bad] * 6, results):
        if values is bad:
            assert isinstance(result, rustml_nb.InputError)
        else:
            np.testing.assert_array_equal(result, expected)


SCRIPT = textwrap.dedent("""
    import numpy as np, rustml_nb
    from concurrent.futures import ThreadPoolExecutor
    from rustml_nb import demo
    models = [rustml_nb.from_pretrained(demo.MODEL_PATH) for _ in range(2)]
    x = np.random.default_rng(0).normal(45, 5, (16, 336, 2)).astype(np.float32)
    alone = [models[0](x[: 1 + i % 16]).prediction_outputs for i in range(64)]
    with ThreadPoolExecutor(4) as pool:
        out = list(pool.map(lambda i: models[i % 2](x[: 1 + i % 16]).prediction_outputs, range(64)))
    assert all(np.array_equal(o, a) for o, a in zip(out, alone))
    import numba.np.ufunc.parallel as parallel
    assert not parallel._is_initialized, "a Numba threading layer was started"
    print("ok")
""")


@pytest.mark.parametrize("layer", ["workqueue", "omp", "tbb"])
def test_no_threading_layer_aborts_on_concurrent_calls(layer):
    """Numba's workqueue layer aborts the interpreter on concurrent entry to a parallel region; rustml_nb's
    kernels have none, so under any layer concurrent calls from separate models simply work."""
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "NUMBA_THREADING_LAYER": layer})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def _forecast_in_child(queue):
    model = rustml_nb.from_pretrained(demo.MODEL_PATH)
    queue.put(model(np.full((3, 336, 2), 40.0, np.float32)).prediction_outputs)


def test_a_forked_child_gets_workers_of_its_own(models):
    """The pool's threads do not survive fork(); a child process must not wait on them forever."""
    models["float32"](inputs(models["float32"], 9, 2))  # the parent's pool is running
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_forecast_in_child, args=(queue,))
    child.start()
    result = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    np.testing.assert_array_equal(result, models["float32"](np.full((3, 336, 2), 40.0, np.float32)).prediction_outputs)


def test_thread_count_setting():
    before = threads.get_num_threads()
    try:
        threads.set_num_threads(1)
        assert rustml_nb.get_num_threads() == 1
        with pytest.raises(rustml_nb.ConfigError, match="positive integer, got 0"):
            rustml_nb.set_num_threads(0)
    finally:
        threads.set_num_threads(before)
    result = subprocess.run([sys.executable, "-c", "import rustml_nb; print(rustml_nb.get_num_threads())"],
                            capture_output=True, text=True, env={**os.environ, "RUSTML_NB_NUM_THREADS": "3"})
    assert result.stdout.strip() == "3"
    result = subprocess.run([sys.executable, "-c", "import rustml_nb; rustml_nb.get_num_threads()"],
                            capture_output=True, text=True, env={**os.environ, "RUSTML_NB_NUM_THREADS": "many"})
    assert "RUSTML_NB_NUM_THREADS must be a positive integer, got 'many'" in result.stderr


@given(units=st.integers(1, 500), tasks=st.integers(1, 4), step=st.integers(1, 64),
       turns=st.lists(st.integers(0, 3), max_size=300))
def test_shares_hand_out_every_unit_once(units, tasks, step, turns):
    """Whatever order the tasks ask in, every unit is handed out exactly once, in ranges of at most ``step``."""
    tasks = min(tasks, units)
    shares = threads.Shares(units, tasks, step)
    taken, finished = [], set()
    for task in [turn % tasks for turn in turns] + [task for task in range(tasks) for _ in range(units + 1)]:
        if task in finished:
            continue
        got = shares.take(task)
        if got is None:
            finished.add(task)
            continue
        assert 0 < got[1] - got[0] <= step
        taken.extend(range(*got))
    assert sorted(taken) == list(range(units))


def test_shares_a_task_done_early_takes_over_the_work_another_has_not_begun():
    """Equal shares, taken from the front of each; a task whose share is used up takes the later half of what
    another has not taken, again and again, so one fast task does nearly all the work of one that waits."""
    shares = threads.Shares(448, 2, 32)
    assert shares.take(1) == (224, 256)  # each task starts at the front of its own share
    assert shares.take(0) == (0, 32)
    mine = [(0, 32)]
    while (got := shares.take(0)) is not None:
        mine.append(got)
    assert mine[:7] == [(0, 32), (32, 64), (64, 96), (96, 128), (128, 160), (160, 192), (192, 224)]
    assert mine[7] == (352, 384)  # the later half of task 1's untaken [256, 448), a step at a time
    assert sum(last - first for first, last in mine) == 224 + 191
    assert shares.take(1) == (256, 257) and shares.take(1) is None  # task 1 ran one step and one unit


def test_a_slow_thread_s_work_is_taken_over(models, monkeypatch):
    """A forward pass whose worker thread runs its steps slowly: the calling thread takes over part of the
    worker's share, and every forecast is still the one each series gets alone."""
    import threading
    import time

    model = models["float32"]
    batch = 6 * model.tokens  # several steps in each thread's share
    values = inputs(model, batch, 0)
    expected = np.concatenate([model(values[i:i + 1]).prediction_outputs for i in range(batch)])
    ran_by = {}
    encode = type(model)._encode_task

    def slow_worker(self, part, first_unit, last_unit, work):
        if threading.current_thread() is not threading.main_thread():
            time.sleep(0.05)
        ran_by[first_unit] = threading.current_thread() is threading.main_thread()
        encode(self, part, first_unit, last_unit, work)

    monkeypatch.setattr(type(model), "_encode_task", slow_worker)
    monkeypatch.setattr(rustml_nb.models.base, "STEPS_PER_SHARE", 4)
    threads.set_num_threads(2)
    try:
        output = model(values).prediction_outputs
    finally:
        threads.set_num_threads(threads._default_threads())
    np.testing.assert_array_equal(output, expected)
    main_steps = sum(ran_by.values())
    assert main_steps > len(ran_by) // 2, ran_by  # the calling thread ran more than its own half of the steps
