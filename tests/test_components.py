"""`tracetui export-tests`: the component tests a porter keeps pass on a clean port and fail,
naming the module and its worst element, on every planted bug of the demos."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from planted import read_bugs

from tracetui.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMOS_DIR = REPO_ROOT / "demos"
BUG_ENV_VAR = "TRACETUI_DEMO_BUG"


def demo_bugs(demo: str) -> dict[str, str]:
    return read_bugs(DEMOS_DIR / demo / "ported.py")


def run_generated(test_file: Path, bug: str | None) -> subprocess.CompletedProcess[str]:
    """pytest on the generated file, in its own folder (none of this repository's configuration)."""
    environment = {key: value for key, value in os.environ.items() if key != BUG_ENV_VAR}
    if bug is not None:
        environment[BUG_ENV_VAR] = bug
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", test_file.name]
    return subprocess.run(command, cwd=test_file.parent, env=environment, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module", params=["gpt", "bert"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    demo = request.param
    folder = tmp_path_factory.mktemp(f"{demo}-components")
    test_file = folder / "tests" / f"test_{demo}_components.py"
    demo_dir = DEMOS_DIR / demo
    arguments = [str(demo_dir / "original.py"), str(demo_dir / "ported.py"), "--map", str(demo_dir / "map.toml"), "-o", str(test_file)]
    previous = os.environ.pop(BUG_ENV_VAR, None)
    try:
        assert main(["export-tests", *arguments]) == 0
    finally:
        if previous is not None:
            os.environ[BUG_ENV_VAR] = previous
    return demo, test_file


def test_the_generated_tests_pass_on_the_clean_port(exported: tuple[str, Path]) -> None:
    demo, test_file = exported
    assert test_file.with_suffix(".safetensors").is_file()
    source = test_file.read_text()
    compile(source, str(test_file), "exec")
    assert source.count("\ndef test_") > 20  # one test per paired module call
    result = run_generated(test_file, bug=None)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"\d+ passed", result.stdout)


def test_the_generated_tests_fail_on_every_planted_bug_naming_its_module(exported: tuple[str, Path]) -> None:
    demo, test_file = exported
    for bug, module in demo_bugs(demo).items():
        result = run_generated(test_file, bug)
        assert result.returncode == 1, f"{demo} {bug}: the component tests passed\n{result.stdout[-2000:]}"
        # The test of the module the bug lives in fails, and says where its output is worst.
        failing = re.findall(r"^FAILED \S+::(\w+)", result.stdout, flags=re.MULTILINE)
        expected = "test_" + re.sub(r"\W+", "_", module)
        assert expected in failing, f"{demo} {bug}: {expected} not among the failures {failing}"
        assert f"{module} differs from the original's" in result.stdout
        assert re.search(r"max \|Δ\| \S+; worst at \[", result.stdout)


def test_export_tests_refuses_a_trace_as_the_port_and_an_output_over_a_script(tmp_path: Path, capsys) -> None:
    demo_dir = DEMOS_DIR / "gpt"
    ported = demo_dir / "ported.py"
    assert main(["export-tests", str(demo_dir / "original.py"), "ported.trace", "-o", str(tmp_path / "test_x.py")]) == 2
    assert "PORTED must be its model script" in capsys.readouterr().err
    assert main(["export-tests", str(demo_dir / "original.py"), str(ported), "-o", str(ported)]) == 2
    assert "one of this command's inputs" in capsys.readouterr().err
    assert main(["export-tests", str(demo_dir / "original.py"), str(ported), "-o", str(tmp_path / "components.py")]) == 2
    assert "test_<something>.py" in capsys.readouterr().err


INJECTING_SCRIPT = '''
import torch

# A name that closes the generated docstring and puts code in the test file, if written as it is.
NAME = 'x"""\\nraise SystemExit(7)\\n"""'


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.add_module(NAME, torch.nn.Linear(4, 4))

    def forward(self, x):
        return getattr(self, NAME)(x)


def build():
    torch.manual_seed(0)
    return Net(), torch.randn(2, 4)
'''


def test_names_cannot_put_code_in_the_generated_file(tmp_path: Path) -> None:
    """ORIG may be a trace someone sent: its module names are data, never code in the test file."""
    script = tmp_path / "model.py"
    script.write_text(INJECTING_SCRIPT)
    test_file = tmp_path / "test_model_components.py"
    assert main(["export-tests", str(script), str(script), "-o", str(test_file)]) == 0
    source = test_file.read_text()
    statements = ast.parse(source).body
    assert not any(isinstance(statement, ast.Raise) for statement in statements)
    assert r'x\"\"\"\\nraise SystemExit(7)' in source  # the name, escaped, inside its docstring
    result = run_generated(test_file, bug=None)
    assert result.returncode == 0, result.stdout + result.stderr
