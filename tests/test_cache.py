"""Where compiled kernels live: built ahead of time, reused from a read-only install, and never a reason for
import or a forecast to fail when no folder can be written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import rustml_nb
from reference import COMPILE_COUNTER, cli_watching_slice_assignments

PACKAGE = Path(rustml_nb.__file__).resolve().parent

# Counts the rustml_nb kernels that compile (cache misses) while it forecasts with the bundled model.
FORECAST = COMPILE_COUNTER + textwrap.dedent("""
    import numpy as np
    import rustml_nb
    from rustml_nb import demo
    history, _ = demo.test_slice()
    print("FORECAST", float(rustml_nb.from_pretrained(demo.MODEL_PATH).forecast(history).iloc[0, 0]))
    print("COMPILED", len(compiled), sorted(set(compiled)))
""")


def installed_copy(root: Path) -> Path:
    """The package copied to root/site/rustml_nb, as a non-editable install would place it."""
    site = root / "site"
    shutil.copytree(PACKAGE, site / "rustml_nb", ignore=shutil.ignore_patterns("__pycache__"))
    return site


def run(code: str, site: Path, home: Path, *args, **env):
    environment = {key: value for key, value in os.environ.items() if key != "NUMBA_CACHE_DIR"}
    environment.update(PYTHONPATH=str(site), HOME=str(home), RUSTML_NB_COMPILE_NOTICE="always", **env)
    command = [sys.executable, "-c", code] if code else [sys.executable, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment, cwd=home.parent)


def compiled_count(result) -> int:
    assert "COMPILED" in result.stdout, result.stderr[-3000:]
    return int(result.stdout.split("COMPILED")[1].split()[0])


def test_no_writable_cache_folder_still_imports_and_forecasts(tmp_path):
    """A read-only install with an unwritable HOME: import, --help and a forecast all work; kernels compile in
    memory, with one warning naming NUMBA_CACHE_DIR."""
    site = installed_copy(tmp_path)
    for package in {path.parent for path in (site / "rustml_nb").rglob("*.py")}:  # where each module's cache goes
        (package / "__pycache__").write_text("a file where the cache folder would go: nothing can be made")
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    assert run("import rustml_nb", site, home).returncode == 0
    help_text = run("", site, home, "-m", "rustml_nb", "--help")
    assert help_text.returncode == 0 and "forecast" in help_text.stdout, help_text.stderr
    result = run(FORECAST, site, home)
    assert result.returncode == 0 and compiled_count(result) > 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if "NUMBA_CACHE_DIR" in line and "no writable" in line]
    assert len(warnings) == 1 and "the package's __pycache__ folders" in warnings[0], result.stderr
    notice = [line for line in result.stderr.splitlines() if line.startswith("rustml_nb: compiling kernels")]
    assert len(notice) == 1 and "for float32" in notice[0], result.stderr


def _ro_mount_works() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount --bind / /mnt 2>/dev/null; echo ok"], capture_output=True, text=True)
    return probe.returncode == 0 and "ok" in probe.stdout


def test_a_cache_built_ahead_of_time_is_reused_even_read_only(tmp_path):
    """`rustml-nb compile` into an install's own __pycache__ (as a Dockerfile does, as root); later processes
    compile nothing, also when the install is read-only to them. (One family, the one the forecast uses:
    the command compiles every family by running the same step for each, and each family's own test checks
    that its compiled kernels serve its checkpoints.)"""
    site = installed_copy(tmp_path)
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    built = run(cli_watching_slice_assignments("compile", "--dtype", "float32", "--family", "patchtst"), site, home)
    assert built.returncode == 0 and "compiled the kernels of patchtst" in built.stdout, built.stderr[-3000:]
    assert "SLICE_ASSIGNMENTS []" in built.stdout, built.stdout  # no kernel compiles a slice's shape-error message
    assert any((site / "rustml_nb" / "models" / "patchtst" / "__pycache__").glob("forward.encode_units-*.nbi"))
    warm = run(FORECAST, site, home)
    assert compiled_count(warm) == 0, warm.stdout
    assert "compiling kernels" not in warm.stderr and "NUMBA_CACHE_DIR" not in warm.stderr, warm.stderr
    if not _ro_mount_works():
        pytest.skip("read-only bind mounts need root and mount namespaces (unshare)")
    script = tmp_path / "forecast.py"
    script.write_text(FORECAST)
    read_only = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount --bind {site} {site} && mount -o remount,ro,bind {site} && "
         f"touch {site}/rustml_nb/__pycache__/probe 2>/dev/null && echo WRITABLE; "
         f"{sys.executable} {script}"],
        capture_output=True, text=True, timeout=600,
        env={**{k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}, "PYTHONPATH": str(site),
             "HOME": str(home), "RUSTML_NB_COMPILE_NOTICE": "always"})
    assert "WRITABLE" not in read_only.stdout
    assert read_only.returncode == 0 and compiled_count(read_only) == 0, read_only.stdout + read_only.stderr[-3000:]
    assert read_only.stdout.split("FORECAST")[1].split()[0] == warm.stdout.split("FORECAST")[1].split()[0]


def test_numba_cache_dir_is_the_only_place_when_set(tmp_path):
    site = installed_copy(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    cache = tmp_path / "cache"
    first = run(FORECAST, site, home, NUMBA_CACHE_DIR=str(cache))
    assert compiled_count(first) > 0 and any(cache.rglob("*.nbi")), first.stderr[-3000:]
    assert not any((site / "rustml_nb").rglob("*.nbi"))
    assert not (home / ".cache" / "numba").exists()
    second = run(FORECAST, site, home, NUMBA_CACHE_DIR=str(cache))
    assert compiled_count(second) == 0 and "compiling kernels" not in second.stderr


def test_an_edit_of_a_shared_kernel_recompiles_the_kernels_that_call_it(tmp_path):
    """A model's compiled kernels contain the shared kernels they call: after an edit of one (here the bias in
    add_bias_activate doubled), the forecast changes at once, and the cache then serves the new code. An edit
    of a module without kernels recompiles nothing."""
    site = installed_copy(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    before = run(FORECAST, site, home)
    assert compiled_count(before) > 0, before.stderr[-3000:]
    rows = site / "rustml_nb" / "kernels" / "rows.py"
    source = rows.read_text()
    assert source.count("row[f] += bias[f]\n") == 1
    rows.write_text(source.replace("row[f] += bias[f]\n", "row[f] += bias[f] * 2\n"))
    edited = run(FORECAST, site, home)
    assert compiled_count(edited) > 0, edited.stderr[-3000:]
    forecast = edited.stdout.split("FORECAST")[1].split()[0]
    assert forecast != before.stdout.split("FORECAST")[1].split()[0]
    cli = site / "rustml_nb" / "cli.py"
    cli.write_text(cli.read_text() + "\n# an edit outside the kernels\n")
    again = run(FORECAST, site, home)
    assert compiled_count(again) == 0 and again.stdout.split("FORECAST")[1].split()[0] == forecast, again.stderr[-3000:]


def test_a_local_checkpoint_loads_without_importing_the_hub_client():
    """A warm start pays for what it uses: loading a folder leaves huggingface_hub (~0.1 s) unimported, and
    `import rustml_nb` leaves pandas unimported; a repo id still reaches the Hub layer."""
    code = textwrap.dedent("""
        import sys, rustml_nb
        from rustml_nb import demo
        assert "pandas" not in sys.modules, "import rustml_nb imported pandas"
        rustml_nb.from_pretrained(demo.MODEL_PATH)
        print("HUB", "huggingface_hub" in sys.modules)
        try:
            rustml_nb.from_pretrained("org/name", local_files_only=True)
        except rustml_nb.NotCachedError:
            pass
        print("HUB", "huggingface_hub" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.stdout.split() == ["HUB", "False", "HUB", "True"], result.stderr[-2000:]


def test_every_family_runs_from_a_warm_cache_as_it_runs_compiled(tmp_path):
    """A kernel loaded from the cache runs what it ran when it was compiled, in a new process, for every family
    (a cached kernel links against Numba's runtime, which a warm start sets up itself: see jit.py)."""
    from reference import build_reference

    from rustml_nb import demo

    mixer = tmp_path / "mixer"
    build_reference("PatchTSMixerForPrediction", seed=0, num_input_channels=2, context_length=32, patch_length=8,
                    patch_stride=8, d_model=8, num_layers=1, prediction_length=4).save_pretrained(mixer)
    folders = [str(demo.MODEL_PATH), str(demo.NORMAL_MODEL_PATH), str(demo.TTM_MODEL_PATH), str(mixer)]
    code = COMPILE_COUNTER + textwrap.dedent(f"""
        import hashlib
        import numpy as np
        import rustml_nb
        for folder in {folders!r}:
            model = rustml_nb.from_pretrained(folder)
            history = np.random.default_rng(0).normal(
                size=(3, model.config.context_length, model.config.num_input_channels)).astype(np.float32)
            output = model(history)
            digest = hashlib.sha256(b"".join(np.ascontiguousarray(value).tobytes()
                                             for value in output.__dict__.values() if isinstance(value, np.ndarray)))
            print("OUTPUT", type(model).__name__, digest.hexdigest())
        print("COMPILED", len(compiled), sorted(set(compiled)))
    """)
    home = tmp_path / "home"
    home.mkdir()
    site = Path(__file__).resolve().parent  # reference.py's folder; rustml_nb comes from the test's own install
    cache = str(tmp_path / "cache")
    cold = run(code, site, home, NUMBA_CACHE_DIR=cache)
    assert compiled_count(cold) > 0, cold.stderr[-3000:]
    warm = run(code, site, home, NUMBA_CACHE_DIR=cache)
    assert warm.returncode == 0 and compiled_count(warm) == 0, warm.stdout + warm.stderr[-3000:]
    outputs = [line for line in cold.stdout.splitlines() if line.startswith("OUTPUT")]
    assert len(outputs) == 4 and [line for line in warm.stdout.splitlines() if line.startswith("OUTPUT")] == outputs
