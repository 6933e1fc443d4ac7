"""The command line: every bad argument or file is one line naming it, found before any work is done."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from rustml_nb import __version__, demo
from rustml_nb.cli import main


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "rustml_nb", *args], capture_output=True, text=True, timeout=300,
                          **kwargs)


def one_line_error(result, *fragments):
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"rustml-nb {__version__}"


def test_debug_is_accepted_after_the_command_too():
    result = run_cli("inspect", "/no/such/folder", "--debug")
    assert result.returncode == 1 and "Traceback" in result.stderr and "not a checkpoint folder" in result.stderr


@pytest.fixture
def history_csv(tmp_path):
    path = tmp_path / "history.csv"
    demo.test_slice()[0].to_csv(path)
    return path


@pytest.mark.parametrize("output, fragment", [
    ("forecast.xlsx", "the output must end in .csv or .parquet"),
    ("missing/forecast.csv", "the folder"),
])
def test_output_paths_are_checked_before_the_model_is_loaded(tmp_path, history_csv, output, fragment, capsys):
    # a model path that does not exist proves the output was refused first
    assert main(["forecast", str(tmp_path / "no-model"), "--input", str(history_csv),
                 "--output", str(tmp_path / output)]) == 1
    err = capsys.readouterr().err
    assert fragment in err and str(tmp_path / output) in err and "checkpoint" not in err


def test_plot_without_matplotlib_is_refused_first(tmp_path, history_csv, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["forecast", str(tmp_path / "no-model"), "--input", str(history_csv), "--plot",
                 str(tmp_path / "f.png")]) == 1
    assert "--plot needs matplotlib" in capsys.readouterr().err
    assert main(["forecast", "--plot", str(tmp_path / "f.gif")]) == 1
    assert "expected a .png" in capsys.readouterr().err


@pytest.mark.parametrize("content, fragment", [
    ("", "the file is empty"),
    ("time,seattle,san_francisco\n", "no data rows"),
    ("time;seattle;san_francisco\n2010-01-01 00:00;1;2\n2010-01-01 01:00;1;2\n", "another delimiter"),
])
def test_unusable_input_files(tmp_path, content, fragment):
    path = tmp_path / "input.csv"
    path.write_text(content)
    one_line_error(run_cli("forecast", str(demo.MODEL_PATH), "--input", str(path)), fragment, str(path))


def test_a_folder_as_input(tmp_path):
    one_line_error(run_cli("forecast", str(demo.MODEL_PATH), "--input", str(tmp_path)), "is a folder", str(tmp_path))


def test_freq_and_pad_on_the_command_line(tmp_path):
    history = demo.test_slice()[0].iloc[-300:]
    path = tmp_path / "short.csv"
    history.iloc[::2].to_csv(path)  # every other hour: a 2 h step, 150 rows
    one_line_error(run_cli("forecast", str(demo.MODEL_PATH), "--input", str(path)), "needs 336 rows", "--pad")
    result = run_cli("forecast", str(demo.MODEL_PATH), "--input", str(path), "--pad", "--freq", "h", "--output",
                     str(tmp_path / "out.csv"))
    assert result.returncode == 0, result.stderr
    assert "149 missing row(s) of its h grid were inserted" in result.stderr
    written = pd.read_csv(tmp_path / "out.csv", index_col=0, parse_dates=True)
    assert written.index[0] == history.index[-2] + pd.Timedelta(hours=1)


def test_help_texts():
    forecast = run_cli("forecast", "--help").stdout
    assert "--dtype {float32,float64}" in forecast and "precision" in forecast
    assert "last context_length rows" in " ".join(forecast.split())
    assert "compile every kernel" in run_cli("--help").stdout
