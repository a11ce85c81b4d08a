"""Originals written in Flax (linen, NNX) and Keras 3, compared with their PyTorch ports (issue 11).

The demos demos/flax_gpt and demos/keras_llama are the real small models: a clean port matches,
each planted bug is blamed on its module. Smaller models written here check naming, dtypes and
the errors. The jax, flax and keras packages are in the test extra: nothing here is skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pexpect
import pytest
import torch

import tracetui
from tracetui.errors import RecordingError, ScriptError
from tracetui.frameworks import detect_framework

REPO_ROOT = Path(__file__).resolve().parents[1]
FLAX_GPT = REPO_ROOT / "demos" / "flax_gpt"
KERAS_LLAMA = REPO_ROOT / "demos" / "keras_llama"
DEMOS = {"flax_gpt": FLAX_GPT, "keras_llama": KERAS_LLAMA}
BUG_ENV_VAR = "TRACETUI_DEMO_BUG"
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[=>]")


def load_ported(demo: str) -> ModuleType:
    name = f"_test_frameworks_{demo}_ported"
    if name not in sys.modules:
        specification = importlib.util.spec_from_file_location(name, DEMOS[demo] / "ported.py")
        assert specification is not None and specification.loader is not None
        module = importlib.util.module_from_spec(specification)
        sys.modules[name] = module
        specification.loader.exec_module(module)
    return sys.modules[name]


BUG_CASES = [(demo, bug, culprit) for demo in DEMOS for bug, culprit in load_ported(demo).BUGS.items()]
BUG_IDS = [f"{demo}-{bug}" for demo, bug, _ in BUG_CASES]


@pytest.fixture(autouse=True)
def no_planted_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BUG_ENV_VAR, raising=False)


def compare_demo(demo: str, **options: object) -> tracetui.Comparison:  # type: ignore[name-defined]
    folder = DEMOS[demo]
    options.setdefault("rename_map", folder / "map.toml")
    options.setdefault("rerun", False)
    return tracetui.compare(folder / "original.py", folder / "ported.py", **options)  # type: ignore[arg-type]


def run_tracetui(*arguments: str, environment: dict[str, str] | None = None, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != BUG_ENV_VAR}
    env.update(environment or {})
    return subprocess.run(
        [sys.executable, "-m", "tracetui", *arguments], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


# -- the demos: a clean port matches, each planted bug names its module ------------------------------


@pytest.mark.parametrize("demo", list(DEMOS))
def test_clean_port_of_a_foreign_original_matches_at_the_default_tolerance(demo: str) -> None:
    comparison = compare_demo(demo)
    assert comparison.verdict == "match", comparison.reason
    assert comparison.culprits == []
    paired = [row for row in comparison.rows if row.is_paired]
    assert len(paired) >= 20
    largest = max(row.output_max_abs for row in paired if row.output_max_abs is not None)
    assert largest < 1e-4  # float32 JAX and torch agree to rounding on these models


@pytest.mark.parametrize(("demo", "bug", "culprit"), BUG_CASES, ids=BUG_IDS)
def test_each_planted_bug_names_its_ported_culprit_with_the_map(demo: str, bug: str, culprit: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BUG_ENV_VAR, bug)
    comparison = compare_demo(demo)
    assert comparison.verdict == "diverged"
    assert comparison.culprit is not None and comparison.culprit.ported is not None
    assert comparison.culprit.ported.name == culprit, [row.label for row in comparison.culprits]


@pytest.mark.parametrize(("demo", "bug", "culprit"), BUG_CASES)
def test_each_planted_bug_names_its_ported_culprit_without_a_map(
    demo: str, bug: str, culprit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BUG_ENV_VAR, bug)
    comparison = compare_demo(demo, rename_map=None)
    assert comparison.culprit is not None and comparison.culprit.ported is not None
    assert comparison.culprit.ported.name == culprit


# -- recording: names, classes, dtypes, what is kept --------------------------------------------------


def test_linen_calls_are_named_by_module_path_with_flax_class_names() -> None:
    trace = tracetui.record(FLAX_GPT / "original.py", rerun=False)
    by_name = {record.name: record for record in trace.records}
    assert trace.records[0].name == "" and trace.records[0].class_name == "GPT"
    assert by_name["h_0.attn.query"].class_name == "Dense"
    assert by_name["h_1.ln_2"].class_name == "LayerNorm"
    assert by_name["wte"].class_name == "Embed"
    assert by_name["h_0.attn.query"].parent == by_name["h_0.attn"].index
    query = by_name["h_0.attn.query"]
    assert [leaf.name for leaf in query.inputs] == ["inputs"]
    assert query.outputs[0].tensor is not None and query.outputs[0].tensor.dtype == torch.float32
    assert query.outputs[0].shape == (1, 12, 64)
    # The attention's output, passed on to the block unchanged, is stored once.
    block = by_name["h_0"]
    assert [leaf.name for leaf in block.inputs] == ["hidden_states", "deterministic"]
    assert block.inputs[1].value_repr == "True"


NNX_SCRIPT = '''
import jax.numpy as jnp
from flax import nnx


class Block(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(8, 8, rngs=rngs)
        self.norm = nnx.LayerNorm(8, rngs=rngs)

    def __call__(self, hidden_states):
        return self.norm(nnx.gelu(self.linear(hidden_states)))


class Model(nnx.Module):
    def __init__(self, rngs):
        self.layers = nnx.List([Block(rngs) for _ in range(2)])
        self.head = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, hidden_states):
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return self.head(hidden_states)


def build():
    return Model(nnx.Rngs(0)), jnp.linspace(-1.0, 1.0, 16, dtype=jnp.float32).reshape(2, 8)
'''


def test_nnx_calls_are_named_by_attribute_path_and_the_classes_are_put_back(tmp_path: Path) -> None:
    script = tmp_path / "nnx_model.py"
    script.write_text(NNX_SCRIPT)
    trace = tracetui.record(script, rerun=False)
    assert [(record.name, record.class_name, record.depth) for record in trace.records] == [
        ("", "Model", 0),
        ("layers.0", "Block", 1),
        ("layers.0.linear", "Linear", 2),
        ("layers.0.norm", "LayerNorm", 2),
        ("layers.1", "Block", 1),
        ("layers.1.linear", "Linear", 2),
        ("layers.1.norm", "LayerNorm", 2),
        ("head", "Linear", 1),
    ]
    from flax import nnx

    assert "__call__" not in nnx.Linear.__dict__ or not hasattr(nnx.Linear.__call__, "__wrapped__")
    head = trace.records[-1]
    assert head.outputs[0].tensor is not None and head.outputs[0].shape == (2, 3)


BFLOAT16_SCRIPT = '''
import jax
import jax.numpy as jnp
import flax.linen as nn


class Model(nn.Module):
    @nn.compact
    def __call__(self, hidden_states):
        hidden_states = nn.Dense(8, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, name="up")(hidden_states)
        return nn.Dense(4, dtype=jnp.float32, name="down")(hidden_states)


def build():
    model = Model()
    inputs = jnp.linspace(-2.0, 2.0, 24, dtype=jnp.float32).reshape(3, 8).astype(jnp.bfloat16)
    return model.bind(model.init(jax.random.PRNGKey(0), inputs)), inputs
'''


def test_bfloat16_leaves_are_kept_in_bfloat16_bit_for_bit(tmp_path: Path) -> None:
    script = tmp_path / "bf16_model.py"
    script.write_text(BFLOAT16_SCRIPT)
    trace = tracetui.record(script, rerun=False)
    up = next(record for record in trace.records if record.name == "up")
    leaf = up.outputs[0]
    assert leaf.dtype == "bfloat16"
    import jax.numpy as jnp
    import numpy

    expected = numpy.asarray(jnp.linspace(-2.0, 2.0, 24, dtype=jnp.float32).reshape(3, 8).astype(jnp.bfloat16).astype(jnp.float32))
    assert up.inputs[0].dtype == "bfloat16"
    assert up.inputs[0].tensor is not None
    assert torch.equal(up.inputs[0].tensor.float(), torch.tensor(expected))
    down = next(record for record in trace.records if record.name == "down")
    assert down.outputs[0].dtype == "float32"


def test_keep_stats_and_only_apply_to_a_foreign_original() -> None:
    trace = tracetui.record(FLAX_GPT / "original.py", rerun=False, keep="stats", only=r"^h_1\.mlp")
    by_name = {record.name: record for record in trace.records}
    assert by_name["h_0.attn.query"].outputs[0].tensor is None
    assert by_name["h_0.attn.query"].outputs[0].summary is not None
    assert by_name["h_1.mlp.fc"].outputs[0].tensor is not None


def test_rerun_of_a_foreign_original_finds_no_nondeterminism_with_deterministic_inputs() -> None:
    trace = tracetui.record(FLAX_GPT / "original.py", rerun=True)
    assert trace.rerun_output_diff is not None
    assert max(trace.rerun_output_diff) == 0.0


def test_the_python_api_takes_a_linen_pair_built_in_the_callers_code() -> None:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    model = nn.Sequential([nn.Dense(4), nn.relu, nn.Dense(2)])
    inputs = jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(2, 3)
    variables = model.init(jax.random.PRNGKey(0), inputs)
    trace = tracetui.record(((model, variables), inputs), rerun=False)
    names = [(record.name, record.class_name) for record in trace.records]
    assert names == [("", "Sequential"), ("layers_0", "Dense"), ("layers_2", "Dense")]
    expected = torch.from_numpy(numpy_copy(model.apply(variables, inputs)))
    assert trace.records[0].outputs[0].tensor is not None and torch.equal(trace.records[0].outputs[0].tensor, expected)


def numpy_copy(array: object) -> object:
    import numpy

    return numpy.array(array)


def test_detect_framework() -> None:
    import flax.linen as nn
    from flax import nnx

    assert detect_framework(torch.nn.Linear(2, 2)) is None
    assert detect_framework(object()) is None
    assert detect_framework(nn.Dense(3)) == "flax.linen"
    assert detect_framework((nn.Dense(3), {})) == "flax.linen"
    assert detect_framework(nnx.Linear(2, 2, rngs=nnx.Rngs(0))) == "flax.nnx"


# -- Keras: the script's backend holds ---------------------------------------------------------------


KERAS_BACKEND_SCRIPT = '''
import os

os.environ["KERAS_BACKEND"] = "jax"

import keras
import numpy


def build():
    assert keras.backend.backend() == "jax", keras.backend.backend()
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(3, name="head")(keras.layers.Dense(5, activation="relu", name="hidden")(inputs))
    model = keras.Model(inputs, outputs, name="classifier")
    return model, numpy.linspace(-1.0, 1.0, 12, dtype="float32").reshape(2, 6)
'''


def test_the_keras_backend_set_in_the_script_wins_over_the_environment(tmp_path: Path) -> None:
    script = tmp_path / "keras_model.py"
    script.write_text(KERAS_BACKEND_SCRIPT)
    trace_path = tmp_path / "keras.trace"
    result = run_tracetui("record", str(script), "-o", str(trace_path), environment={"KERAS_BACKEND": "torch"})
    assert result.returncode == 0, result.stderr
    shown = run_tracetui("show", str(trace_path))
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"hidden\s+Dense", shown.stdout) and re.search(r"head\s+Dense", shown.stdout), shown.stdout


# -- the commands with a foreign original --------------------------------------------------------------


def test_record_then_show_then_compare_the_saved_trace_with_the_port(tmp_path: Path) -> None:
    trace_path = tmp_path / "orig.trace"
    recorded = run_tracetui("record", str(FLAX_GPT / "original.py"), "-o", str(trace_path))
    assert recorded.returncode == 0, recorded.stderr
    shown = run_tracetui("show", str(trace_path))
    assert shown.returncode == 0 and "h_0.attn.query" in shown.stdout and "Dense" in shown.stdout
    report_path = tmp_path / "report.json"
    compared = run_tracetui(
        "compare", str(trace_path), str(FLAX_GPT / "ported.py"), "--map", str(FLAX_GPT / "map.toml"),
        "--no-tui", "--json", str(report_path), environment={BUG_ENV_VAR: "kernel_not_transposed"},
    )
    assert compared.returncode == 1, compared.stderr
    report = json.loads(report_path.read_text())
    assert report["verdict"] == "diverged"
    assert report["culprits"][0]["original"] == "h_1.attn.out"
    assert report["culprits"][0]["ported"] == "model.layers.1.self_attn.o_proj"


def test_compare_scripts_from_the_command_line_with_json(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    compared = run_tracetui(
        "compare", str(KERAS_LLAMA / "original.py"), str(KERAS_LLAMA / "ported.py"), "--map", str(KERAS_LLAMA / "map.toml"),
        "--no-tui", "--no-rerun", "--json", str(report_path), environment={BUG_ENV_VAR: "norm_eps", "KERAS_BACKEND": "torch"},
    )
    assert compared.returncode == 1, compared.stderr
    report = json.loads(report_path.read_text())
    assert [(culprit["original"], culprit["ported"]) for culprit in report["culprits"]] == [("final_norm", "model.norm")]
    assert "final_norm" in compared.stdout and "RMSNorm" in compared.stdout


def test_stream_with_a_foreign_original(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BUG_ENV_VAR, "qk_swapped")
    comparison = compare_demo("flax_gpt", stream=True)
    assert comparison.culprit is not None and comparison.culprit.ported is not None
    assert comparison.culprit.ported.name == "model.layers.0.self_attn.q_proj"


def test_fix_search_and_noise_floor_say_why_they_skip_a_foreign_original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = tmp_path / "ported_bf16.py"
    port.write_text(
        "import importlib.util, torch\n"
        f"specification = importlib.util.spec_from_file_location('_flax_port', {str(FLAX_GPT / 'ported.py')!r})\n"
        "import sys\nport = importlib.util.module_from_spec(specification); sys.modules['_flax_port'] = port\n"
        "specification.loader.exec_module(port)\n"
        "def build():\n    model, input_ids = port.build()\n    return model.to(torch.bfloat16), input_ids\n"
    )
    comparison = tracetui.compare(FLAX_GPT / "original.py", port, rename_map=FLAX_GPT / "map.toml", rerun=False)
    assert comparison.rounding is not None and comparison.rounding.note is not None
    assert "the original is a flax.linen model" in comparison.rounding.note


# -- errors ------------------------------------------------------------------------------------------


JITTED_SCRIPT = '''
import jax
import jax.numpy as jnp
import flax.linen as nn


class Model(nn.Module):
    @nn.compact
    def __call__(self, hidden_states):
        return nn.Dense(4, name="dense")(hidden_states)


def build():
    model = Model()
    inputs = jnp.ones((2, 4))
    return model.bind(model.init(jax.random.PRNGKey(0), inputs)), inputs


@jax.jit
def apply(variables, inputs):
    return Model().apply(variables, inputs)


def forward(model, inputs):
    return apply(model.variables, inputs)
'''


def test_a_jitted_forward_is_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    script = tmp_path / "jitted.py"
    script.write_text(JITTED_SCRIPT)
    with pytest.raises(RecordingError, match="un-jitted") as raised:
        tracetui.record(script, rerun=False)
    assert str(script) in str(raised.value)
    result = run_tracetui("show", str(script))
    assert result.returncode == 2 and "un-jitted" in result.stderr and "Traceback" not in result.stderr


def test_a_foreign_port_is_refused(tmp_path: Path) -> None:
    result = run_tracetui("compare", str(FLAX_GPT / "ported.py"), str(FLAX_GPT / "original.py"), "--no-tui")
    assert result.returncode == 2
    assert "the port must be a PyTorch model" in result.stderr
    assert "flax.linen" in result.stderr


def test_an_unknown_model_object_lists_what_is_accepted(tmp_path: Path) -> None:
    script = tmp_path / "unknown.py"
    script.write_text("class Model:\n    pass\n\ndef build():\n    return Model(), (1,)\n")
    with pytest.raises(ScriptError) as raised:
        tracetui.record(script, rerun=False)
    message = str(raised.value)
    assert "build() returned a Model as the model" in message
    assert "torch.nn.Module" in message and "Flax linen" in message and "NNX" in message and "Keras 3" in message


def test_an_unbound_linen_module_says_to_bind_it(tmp_path: Path) -> None:
    script = tmp_path / "unbound.py"
    script.write_text("import jax.numpy as jnp\nimport flax.linen as nn\n\ndef build():\n    return nn.Dense(3), jnp.ones((1, 2))\n")
    with pytest.raises(ScriptError, match=r"unbound Flax module \(Dense\).*model.bind\(variables\)"):
        tracetui.record(script, rerun=False)


# -- the debugger on the original side ------------------------------------------------------------


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[list[pexpect.spawn]]:
    children: list[pexpect.spawn] = []
    yield children
    for child in children:
        if child.isalive():
            child.terminate(force=True)


def test_break_at_on_a_flax_original_stops_in_the_modules_call_with_the_ports_tensors(
    tmp_path: Path, terminal: list[pexpect.spawn]
) -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("IPY_TEST_SIMPLE_PROMPT", BUG_ENV_VAR)}
    env.update({"TERM": "dumb", "IPYTHONDIR": str(tmp_path / "ipython"), "PYTHONUNBUFFERED": "1", BUG_ENV_VAR: "attention_scale"})
    child = pexpect.spawn(
        sys.executable,
        ["-m", "tracetui", "compare", "demos/flax_gpt/original.py", "demos/flax_gpt/ported.py", "--map", "demos/flax_gpt/map.toml",
         "--no-rerun", "--side", "original", "--break-at", "h_0.attn"],
        cwd=str(REPO_ROOT), env=env, dimensions=(60, 250), encoding="utf-8", timeout=120,
    )
    terminal.append(child)
    child.expect_exact("ipdb> ")
    stop = ANSI.sub("", child.before).replace("\r", "")
    assert "stopped in the original model" in stop
    source = (FLAX_GPT / "original.py").read_text().splitlines()
    first_line = next(number for number, text in enumerate(source, 1) if "batch, length, width = hidden_states.shape" in text)
    assert f"original.py({first_line})__call__()" in stop, stop[-2000:]
    assert "model.layers.0.self_attn" in stop
    child.sendline("p ctx.other.inputs")
    child.expect_exact("ipdb> ")
    printed = ANSI.sub("", child.before)
    assert "hidden_states" in printed and "float32[1, 12, 64]" in printed
    child.sendline("p type(self).__name__, deterministic")
    child.expect_exact("ipdb> ")
    assert "('CausalSelfAttention', True)" in ANSI.sub("", child.before)
    child.sendline("c")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
