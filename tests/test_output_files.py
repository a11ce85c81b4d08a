"""Outputs are checked before any model runs, never overwrite an input, and are written whole or not at all.

Issue 13, items 9, 10, 12, 13 and 17: a wrong output path (a folder, a missing folder, /dev/full,
a file where a folder should be, a Python source, an input of the command) was a raw traceback
with exit status 1 after both models had run, or silently destroyed the user's file; a full disk
left a truncated trace where a good one had been; a script that changed the working directory
moved relative outputs into its own folder and made a relative PORTED "no such file".
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tracetui.cli import main
from tracetui.errors import OutputError
from tracetui.output_files import PARTIAL_SUFFIX, write_atomically, write_text_atomically
from tracetui.tracefile import INDEX_NAME, load_trace

# build() leaves a marker next to the script: an output error must come before it.
ORIGINAL = """
import pathlib
import torch


def build():
    (pathlib.Path(__file__).parent / "built.marker").touch()
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()), torch.ones(1, 4)
"""
PORTED_DIVERGES = ORIGINAL.replace("torch.nn.ReLU()", "torch.nn.GELU()")
MAP = "rename = [['^0$', '0']]\n"


def run_tracetui(*arguments: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real command, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "tracetui", *map(str, arguments)], capture_output=True, text=True, cwd=cwd, timeout=300, check=False
    )


@pytest.fixture
def models(write_script: Callable[[str, str], Path]) -> tuple[Path, Path, Path]:
    original = write_script("original.py", ORIGINAL)
    ported = write_script("ported.py", PORTED_DIVERGES)
    rename_map = original.parent / "map.toml"
    rename_map.write_text(MAP)
    return original, ported, rename_map


def partial_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.name.endswith(PARTIAL_SUFFIX)]


def assert_clear_usage_error(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error:"), result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


# -- item 9: a bad output path is a clear error before any model runs ----------------------------


@pytest.mark.parametrize(
    ("command", "option", "target", "phrase"),
    [
        ("compare", "--json", "existing_folder", "that is a folder"),
        ("compare", "--json", "missing/dir/r.json", "does not exist"),
        ("align", "-o", "existing_folder", "that is a folder"),
        ("weights", "--json", "existing_folder", "that is a folder"),
        ("compare", "--spill", "existing_file.txt", "that is a file"),  # item 10
    ],
)
def test_a_bad_output_path_is_refused_before_the_models_run(
    command: str, option: str, target: str, phrase: str, models: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    original, ported, _ = models
    (tmp_path / "existing_folder").mkdir()
    (tmp_path / "existing_file.txt").write_text("keep me")
    extra = ["--no-tui", "--no-rerun", "--no-isolate"] if command == "compare" else []

    result = run_tracetui(command, original, ported, option, target, *extra, cwd=tmp_path)

    assert_clear_usage_error(result, f"{option} {target}", phrase)
    assert not (tmp_path / "built.marker").exists(), "the error came after a model was built"
    assert (tmp_path / "existing_file.txt").read_text() == "keep me"


def test_a_json_that_cannot_be_written_keeps_the_printed_report(models: tuple[Path, Path, Path]) -> None:
    original, ported, _ = models
    result = run_tracetui("compare", original, ported, "--no-tui", "--no-rerun", "--no-isolate", "--json", "/dev/full")

    assert result.returncode == 2, result.stderr
    assert "DIVERGED" in result.stdout and "first divergence" in result.stdout  # printed first, and whole
    assert "the report above is complete, but the JSON report was not written" in result.stderr
    assert "/dev/full" in result.stderr and "the disk is full" in result.stderr
    assert "Traceback" not in result.stderr


def test_weights_prints_its_report_before_a_json_that_cannot_be_written(models: tuple[Path, Path, Path]) -> None:
    original, ported, _ = models
    result = run_tracetui("weights", original, ported, "--json", "/dev/full")

    assert result.returncode == 2, result.stderr
    assert result.stdout.strip(), "the weight report was lost"
    assert "the report above is complete, but the JSON report was not written" in result.stderr


# -- item 12: never overwrite a Python source or an input of the same command -------------------


@pytest.mark.parametrize(
    ("arguments", "victim", "phrase"),
    [
        (["record", "original.py", "-o", "original.py"], "original.py", "one of this command's inputs"),
        (["record", "original.py", "-o", "./original.py"], "original.py", "one of this command's inputs"),
        (["record", "./original.py", "-o", "ported.py"], "ported.py", "a .py name is for Python source"),
        (["align", "original.py", "ported.py", "-o", "ported.py"], "ported.py", "one of this command's inputs"),
        (["align", "original.py", "ported.py", "--map", "map.toml", "-o", "./map.toml"], "map.toml", "one of this command's inputs"),
        (["compare", "original.py", "ported.py", "--no-tui", "--json", "original.py"], "original.py", "one of this command's inputs"),
        (["weights", "original.py", "ported.py", "--map", "map.toml", "--json", "map.toml"], "map.toml", "one of this command's inputs"),
        (["export-tests", "original.py", "ported.py", "-o", "./original.py"], "original.py", "one of this command's inputs"),
        (["export-tests", "original.py", "ported.py", "-o", "test_mine.py"], "test_mine.py", "not written by `tracetui export-tests`"),
        (["export-tests", "original.py", "ported.py", "-o", "test_port.py"], "test_port.safetensors", "is not a fixture"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_an_output_never_overwrites_a_python_source_or_an_input(
    arguments: list[str], victim: str, phrase: str, models: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "test_mine.py").write_text("def test_mine():\n    assert True\n")
    (tmp_path / "test_port.safetensors").write_bytes(b"a checkpoint of the user's, not ours")
    before = (tmp_path / victim).read_bytes()

    assert main(arguments) == 2

    error = capsys.readouterr().err
    assert error.startswith("error:") and phrase in error, error
    assert (tmp_path / victim).read_bytes() == before
    assert not (tmp_path / "built.marker").exists()


def test_export_tests_replaces_the_files_it_wrote_itself(models: tuple[Path, Path, Path], tmp_path: Path, capsys) -> None:
    original, ported, _ = models
    test_file = tmp_path / "tests" / "test_port_components.py"
    for _ in range(2):  # the second export replaces the first one's test file and fixture
        assert main(["export-tests", str(original), str(ported), "-o", str(test_file)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert test_file.with_suffix(".safetensors").exists() and not partial_files(tmp_path)


# -- item 13: written whole or not at all ---------------------------------------------------------


def half_then_full_disk(path: Path, data: bytes) -> None:
    """What a full disk does: part of the data goes in, then the write fails."""
    with open(path, "wb") as file:
        file.write(data[: len(data) // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_failed_write_leaves_the_old_file_and_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text('{"good": true}\n')

    with pytest.raises(OutputError, match=r"report.json: could not be written \(the disk is full\); the file already there is unchanged"):
        write_atomically(target, lambda temporary: half_then_full_disk(temporary, b"x" * 1000))
    assert target.read_text() == '{"good": true}\n'
    assert sorted(tmp_path.iterdir()) == [target]

    def interrupted(temporary: Path) -> None:
        temporary.write_text('{"half')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, interrupted)
    assert target.read_text() == '{"good": true}\n'
    assert sorted(tmp_path.iterdir()) == [target]

    write_text_atomically(target, '{"new": true}\n')
    assert target.read_text() == '{"new": true}\n' and sorted(tmp_path.iterdir()) == [target]


def test_a_new_file_gets_the_usual_permissions_and_a_replaced_one_keeps_its_own(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.json"
        write_text_atomically(fresh, "{}")
        assert fresh.stat().st_mode & 0o777 == 0o644
        private = tmp_path / "private.json"
        private.write_text("{}")
        private.chmod(0o600)
        write_text_atomically(private, "[]")
        assert private.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(umask)


def test_record_over_a_good_trace_on_a_full_disk_keeps_the_good_trace(
    models: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    original, _, _ = models
    trace_path = tmp_path / "original.trace"
    assert main(["record", str(original), "-o", str(trace_path), "--no-rerun"]) == 0
    good = trace_path.read_bytes()

    def full_disk(path: Path, header: bytes, tensors: object) -> None:
        half_then_full_disk(path, b"\0" * len(good))

    monkeypatch.setattr("tracetui.spill.write_header_and_data", full_disk)
    capsys.readouterr()
    assert main(["record", str(original), "-o", str(trace_path), "--no-rerun"]) == 2

    error = capsys.readouterr().err
    assert "the disk is full" in error and "the file already there is unchanged" in error and "Traceback" not in error
    assert trace_path.read_bytes() == good
    assert len(load_trace(trace_path)) > 0
    assert not partial_files(tmp_path)


def text_writes_fail_halfway(monkeypatch: pytest.MonkeyPatch) -> None:
    def write_text(self: Path, data: str, encoding: str | None = None, errors: str | None = None, newline: str | None = None) -> int:
        half_then_full_disk(self, data.encode())
        return 0

    monkeypatch.setattr(Path, "write_text", write_text)


@pytest.mark.parametrize(
    ("arguments", "output"),
    [
        (["compare", "original.py", "ported.py", "--no-tui", "--no-rerun", "--no-isolate", "--json"], "report.json"),
        (["weights", "original.py", "ported.py", "--json"], "weights.json"),
        (["align", "original.py", "ported.py", "-o"], "map.toml"),
    ],
    ids=["compare --json", "weights --json", "align -o"],
)
def test_a_report_or_map_over_a_good_one_on_a_full_disk_keeps_the_good_one(
    arguments: list[str], output: str, models: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / output).write_text("the good one\n")
    text_writes_fail_halfway(monkeypatch)

    assert main([*arguments, output]) == 2

    error = capsys.readouterr().err
    assert f"{output}: could not be written (the disk is full); the file already there is unchanged" in error
    assert (tmp_path / output).read_text() == "the good one\n"
    assert not partial_files(tmp_path)


def test_a_directory_trace_whose_index_cannot_be_written_is_not_taken_for_a_finished_one(
    models: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    original, _, _ = models
    directory = tmp_path / "trace_directory"
    text_writes_fail_halfway(monkeypatch)

    assert main(["record", str(original), "-o", str(directory), "--no-rerun"]) == 2

    assert "the disk is full" in capsys.readouterr().err
    assert not (directory / INDEX_NAME).exists() and not partial_files(tmp_path)


@pytest.mark.parametrize("spill", [False, True], ids=["saved", "spilled"])
def test_record_over_a_good_directory_trace_on_a_full_disk_keeps_the_good_trace(
    spill: bool, models: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A directory trace is recorded into a new folder that replaces the old one only when
    complete: a full disk halfway through the shards leaves the old trace whole."""
    original, _, _ = models
    directory = tmp_path / "trace_directory"
    extra = ["--spill"] if spill else []
    assert main(["record", str(original), "-o", str(directory), "--no-rerun", *extra]) == 0
    good = {path.name: path.read_bytes() for path in directory.iterdir()}

    def full_disk(path: Path, header: bytes, tensors: object) -> None:
        half_then_full_disk(path, b"\0" * 4096)

    monkeypatch.setattr("tracetui.spill.write_header_and_data", full_disk)
    capsys.readouterr()
    assert main(["record", str(original), "-o", str(directory), "--no-rerun", *extra]) == 2

    assert "the disk is full" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in directory.iterdir()} == good
    assert len(load_trace(directory)) > 0
    assert not partial_files(tmp_path)  # no partial folder left
    monkeypatch.undo()
    assert main(["record", str(original), "-o", str(directory), "--no-rerun", *extra]) == 0  # and a good run replaces it
    assert len(load_trace(directory)) > 0 and not partial_files(tmp_path)
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".trace_directory")]  # nor the old one


def test_a_folder_for_a_trace_that_holds_other_files_is_refused_before_recording(models: tuple[Path, Path, Path], tmp_path: Path) -> None:
    original, ported, _ = models
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("keep me")
    (tmp_path / "spill" / "original").mkdir(parents=True)
    (tmp_path / "spill" / "original" / "notes.txt").write_text("keep me")

    for arguments in (["record", original, "-o", "notes"], ["compare", original, ported, "--no-tui", "--spill", "spill"]):
        result = run_tracetui(*arguments, cwd=tmp_path)
        assert_clear_usage_error(result, "not a tracetui trace")
        assert not (tmp_path / "built.marker").exists()


# -- item 17: a script that changes the working directory moves nothing ---------------------------

WANDERING_ORIGINAL = """
import os
import torch

os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "elsewhere"))  # at import


def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()), torch.ones(1, 4)
"""

WANDERING_PORT = """
import os
import torch

os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "elsewhere"))


class Wanderer(torch.nn.Module):
    def forward(self, x):
        os.chdir("/")  # in the forward pass
        return x


def build():
    with open(os.path.join(os.path.dirname(__file__), "width.txt")) as file:  # __file__ still leads home
        width = int(file.read())
    os.chdir("/")  # in build()
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(), Wanderer()), torch.ones(1, width)
"""


def test_scripts_that_change_the_working_directory_move_no_output_and_break_no_path(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "original.py").write_text(WANDERING_ORIGINAL)
    (tmp_path / "models" / "ported.py").write_text(WANDERING_PORT)
    (tmp_path / "models" / "width.txt").write_text("4")

    result = run_tracetui(
        "compare", "models/original.py", "models/ported.py", "--no-tui", "--json", "report.json", "--spill", "spilled", cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "report.json").read_text())["verdict"] == "match"
    assert (tmp_path / "spilled" / "ported" / INDEX_NAME).exists()
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert "models/original.py" in result.stdout  # shown as typed

    result = run_tracetui("record", "models/ported.py", "-o", "ported.trace", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ported.trace").exists() and list((tmp_path / "elsewhere").iterdir()) == []


def test_the_callers_working_directory_comes_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tracetui

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "original.py").write_text(WANDERING_ORIGINAL)
    monkeypatch.chdir(tmp_path)

    tracetui.compare("models/original.py", "models/original.py", rerun=False)

    assert Path.cwd() == tmp_path
