"""Every way a model script can be wrong gets one paragraph naming the file, and exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracetui.cli import main

GOOD_SCRIPT = """
import torch
def build():
    return torch.nn.Linear(4, 4), torch.ones(1, 4)
"""

BAD_SCRIPTS = {
    "import_error.py": (
        "import no_such_package_anywhere\n", ["importing the script raised ModuleNotFoundError", "no_such_package_anywhere"]
    ),
    "syntax_error.py": ("def build(:\n    pass\n", ["syntax error at line 1"]),
    "no_build.py": ("import torch\nmodel = torch.nn.Linear(2, 2)\n", ["defines no build()"]),
    "build_not_function.py": ("build = 3\n", ["`build` is a int, not a function"]),
    "build_raises.py": (
        "def build():\n    raise RuntimeError('checkpoint missing: weights.bin')\n",
        ["build() raised RuntimeError: checkpoint missing: weights.bin", "build_raises.py\", line 2"],
    ),
    "returns_model_only.py": (
        "import torch\ndef build():\n    return torch.nn.Linear(2, 2)\n", ["build() returned a Linear", "pair (model, inputs)"]
    ),
    "returns_three.py": ("import torch\ndef build():\n    return torch.nn.Linear(2, 2), torch.ones(2), 1\n", ["a tuple of 3 items"]),
    "wrong_order.py": (
        "import torch\ndef build():\n    return torch.ones(1, 2), torch.nn.Linear(2, 2)\n",
        ["returned a Tensor as the model", "wrong way round"],
    ),
    "bad_inputs.py": (
        "import torch\ndef build():\n    return torch.nn.Linear(2, 2), [torch.ones(1, 2)]\n", ["returned a list as the inputs"]
    ),
    "forward_raises.py": (
        "import torch\ndef build():\n    return torch.nn.Linear(2, 2), torch.ones(1, 3)\n",
        ["the forward pass raised RuntimeError", "mat1 and mat2 shapes cannot be multiplied"],
    ),
    "no_hooks.py": (
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.layer = torch.nn.Linear(2, 2)\n"
        "    def forward(self, x):\n        return self.layer(x)\n"
        "def build():\n    return torch.jit.script(Net()), torch.ones(1, 2)\n",
        ["cannot put a hook on module (root)", "TorchScript"],
    ),
    "forward_bypasses_call.py": (
        "import torch\n"
        "def build():\n    return torch.nn.Linear(2, 2), torch.ones(1, 2)\n"
        "def forward(model, inputs):\n    return model.forward(inputs)\n",
        ["no module hook fired", "call `model(...)`"],
    ),
    "submodules_bypass_call.py": (
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.layer = torch.nn.Linear(2, 2)\n"
        "    def forward(self, x):\n        return self.layer.forward(x)\n"
        "def build():\n    return Net(), torch.ones(1, 2)\n",
        ["only the root module's hooks fired", "`self.layer(x)`"],
    ),
    # sys.exit() anywhere in a script is an error (exit 2), never the script's own status: 0
    # would read as "the port matches", 1 as "divergence found".
    "exits_at_import.py": ("import sys\nsys.exit(0)\n", ["importing the script called sys.exit(0)", "remove the exit"]),
    "exits_in_build.py": ("import sys\ndef build():\n    sys.exit(1)\n", ["build() called sys.exit(1)"]),
    "exits_in_forward.py": (
        "import sys, torch\n"
        "class Quitter(torch.nn.Module):\n"
        "    def forward(self, x):\n        sys.exit(3)\n"
        "def build():\n    return Quitter(), torch.ones(1, 2)\n",
        ["the forward pass called sys.exit(3)"],
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_SCRIPTS))
def test_bad_script_gets_a_clear_error_naming_the_file(name: str, write_script, capsys: pytest.CaptureFixture[str]) -> None:
    source, expected_phrases = BAD_SCRIPTS[name]
    bad = write_script(name, source)
    good = write_script("good.py", GOOD_SCRIPT)

    status = main(["compare", str(good), str(bad), "--no-tui"])

    captured = capsys.readouterr()
    assert status == 2
    assert str(bad) in captured.err
    for phrase in expected_phrases:
        assert phrase in captured.err.replace("\n", " ") or phrase in captured.err
    assert "tracetui/" not in captured.err.split("error:")[0], "no tracetui traceback before the message"
    # The script's own traceback, where it shows the line to fix.
    with_traceback = {"import_error.py", "syntax_error.py", "build_raises.py", "forward_raises.py"} | {
        name for name in BAD_SCRIPTS if name.startswith("exits_")
    }
    assert "Traceback" not in captured.err or name in with_traceback


def test_missing_file_and_wrong_suffix(write_script, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = write_script("good.py", GOOD_SCRIPT)
    assert main(["compare", str(good), str(tmp_path / "nowhere.py"), "--no-tui"]) == 2
    assert "nowhere.py: no such file" in capsys.readouterr().err

    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert main(["compare", str(good), str(notes), "--no-tui"]) == 2
    assert "notes.txt: not a readable tracetui trace" in capsys.readouterr().err


def test_users_traceback_is_shown_without_tracetui_frames(write_script, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write_script(
        "deep.py",
        """
        import torch
        class Net(torch.nn.Module):
            def forward(self, x):
                return self.helper(x)
            def helper(self, x):
                raise ValueError("unsupported rope scaling")
        def build():
            return Net(), torch.ones(2)
        """,
    )
    assert main(["compare", str(bad), str(bad), "--no-tui"]) == 2
    error = capsys.readouterr().err
    assert "in helper" in error and "unsupported rope scaling" in error
    assert "tracetui/record.py" not in error and "tracetui/script.py" not in error


def test_two_scripts_may_each_import_a_local_module_of_the_same_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for side, activation in (("original", "GELU"), ("ported", "ReLU")):
        folder = tmp_path / side
        folder.mkdir()
        (folder / "model.py").write_text(
            "import torch\n"
            f"class Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
            f"        self.layer = torch.nn.Linear(4, 4)\n        self.activation = torch.nn.{activation}()\n"
            "    def forward(self, x):\n        return self.activation(self.layer(x))\n"
        )
        (folder / "run.py").write_text(
            "import torch\nfrom model import Net\ndef build():\n    torch.manual_seed(0)\n    return Net(), torch.randn(3, 4)\n"
        )
    status = main(["compare", str(tmp_path / "original" / "run.py"), str(tmp_path / "ported" / "run.py"), "--no-tui"])
    output = capsys.readouterr().out
    assert status == 1
    assert "GELU" in output and "ReLU" in output
