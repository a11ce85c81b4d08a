"""The debugger: ipdb stops at the first line of a module's forward during a fresh run.

Most tests drive the real ``tracetui compare ... --break-*`` command in a pseudo-terminal
(pexpect) and type at the ipdb prompt as a user would. The terminal is ``TERM=dumb`` (prompt
toolkit's plain prompt, so output can be matched); one test uses the full prompt toolkit
prompt of an xterm. ANSI colour codes are stripped before matching. The last section checks
the Python functions in-process: what ``ctx`` computes, and that hooks, the trace function and
the injected name are all gone after ``q``.
"""

from __future__ import annotations

import ast
import builtins
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from pseudo_terminal import Session, plain

from tracetui import api
from tracetui.debugger import (
    DebugContext,
    ForwardBreakpoint,
    debug_call,
    debug_script_call,
    find_row,
    parse_break_at,
)
from tracetui.errors import UsageError
from tracetui.script import load_script

REPO_ROOT = Path(__file__).resolve().parents[1]
GPT = REPO_ROOT / "demos" / "gpt"

# A three-layer toy pair. `Shared` runs three times with step 0, 1, 2; `Gate.forward` has a
# decorator and a docstring before its first statement; `unused` is in the model but never
# called; the port's gate uses another activation (the culprit); `head` is a torch Linear.
TINY_MODEL = '''
import torch
from torch import nn


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, hidden_states: torch.Tensor, step: int) -> torch.Tensor:
        """Called three times per pass, with step 0, 1 and 2."""
        scaled = hidden_states * (step + 1)
        return self.proj(scaled)


class Gate(nn.Module):
    @torch.no_grad()
    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The activation."""
        gated = torch.{activation}(hidden_states)
        return gated


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = Shared()
        self.gate = Gate()
        self.unused = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        hidden_states = input_values
        for step in range(3):
            hidden_states = self.shared(hidden_states, step)
        hidden_states = self.gate(hidden_states)
        return self.head(hidden_states)


def build():
    torch.manual_seed(0)
    return Net(), torch.linspace(-1.0, 1.0, 8).reshape(2, 4)
'''


@pytest.fixture
def tiny_pair(tmp_path: Path) -> tuple[Path, Path]:
    """original.py (tanh gate) and ported.py (sigmoid gate: the culprit is `gate`)."""
    original = tmp_path / "original.py"
    ported = tmp_path / "ported.py"
    original.write_text(TINY_MODEL.replace("{activation}", "tanh"))
    ported.write_text(TINY_MODEL.replace("{activation}", "sigmoid"))
    return original, ported


def first_statement_line(path: Path, class_name: str) -> int:
    """The line of the first statement of ``class_name.forward`` (after its docstring)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "forward":
                    body = item.body
                    first = body[0]
                    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                        body = body[1:]
                    return body[0].lineno
    raise AssertionError(f"no {class_name}.forward in {path}")


def assert_stopped_at(text: str, file_name: str, line: int) -> None:
    """ipdb's location line ``> .../file.py(LINE)forward()`` and its ``--> LINE`` marker."""
    assert f"{file_name}({line})forward()" in text, text[-1500:]
    assert re.search(rf"-+>\s+{line}\b", text), text[-1500:]


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Callable[..., Session]]:
    started: list[Session] = []

    def start(*arguments: str, environment: dict[str, str] | None = None, term: str = "dumb") -> Session:
        started.append(Session(list(arguments), tmp_path, environment, term))
        return started[-1]

    yield start
    for running in started:
        running.kill()


def run_tracetui(*arguments: str, environment: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "TRACETUI_DEMO_BUG"}
    env.update(environment or {})
    return subprocess.run(
        [sys.executable, "-m", "tracetui", *arguments], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )


# -- in a pseudo-terminal -------------------------------------------------------------------------


def test_break_at_stops_on_the_first_line_of_the_forward_with_its_arguments_and_ctx(session, tiny_pair) -> None:
    original, ported = tiny_pair
    debugging = session(str(original), str(ported), "--no-rerun", "--break-at", "gate")
    stop = debugging.until_prompt()
    # the banner: side, module, class, call, what diverged, and the name at the prompt
    assert "stopped in the ported model" in stop
    assert "module  gate (Gate), call 0" in stop
    assert "status diverged — the culprit" in stop
    assert re.search(r"output: max \|Δ\| \S+, 8 of 8 over atol 0.001", stop)
    assert "`ctx` holds this call's recorded inputs and outputs" in stop
    # past the decorator, the def line and the docstring: the first statement
    assert_stopped_at(stop, "ported.py", first_statement_line(ported, "Gate"))
    assert "torch.sigmoid(hidden_states)" in stop

    assert debugging.send("p hidden_states.shape").strip() == "torch.Size([2, 4])"
    summary = debugging.send("p ctx")
    assert "paired  original gate (Gate), call 0" in summary
    assert "hidden_states vs the original's input hidden_states: max |Δ| 0, 0 of 8 over atol 0.001" in debugging.send(
        "p ctx.diff(hidden_states)"
    )
    assert debugging.send("p ctx.other.inputs['hidden_states'].shape").strip() == "torch.Size([2, 4])"
    debugging.send("n")  # gated = torch.sigmoid(hidden_states)
    assert re.search(r"output: max \|Δ\| \S+, 8 of 8 over atol 0.001, worst at", debugging.send("p ctx.diff_output(gated)"))
    debugging.send("pp ctx.other.outputs")

    output, status = debugging.finish("c")
    assert "debugger: the run finished." in output
    assert "Traceback" not in output
    assert status == 1  # the pair diverges


def test_break_at_name_and_call_stops_on_that_call_of_a_shared_module(session, tiny_pair) -> None:
    original, ported = tiny_pair
    debugging = session(str(original), str(ported), "--no-rerun", "--break-at", "shared:2")
    stop = debugging.until_prompt()
    assert "module  shared (Shared), call 2" in stop
    assert_stopped_at(stop, "ported.py", first_statement_line(ported, "Shared"))
    assert debugging.send("p step").strip() == "2"  # the third call's own argument
    assert debugging.send("p ctx.this.inputs['step']").strip() == "'2'"
    assert "0 of 8 over atol 0.001 — within tolerance" in debugging.send("p ctx.diff(hidden_states)")
    output, status = debugging.finish("c")
    assert "the run finished" in output
    assert status == 1


def test_break_on_mismatch_stops_in_the_culprit_of_a_demo_bug(session) -> None:
    debugging = session(
        "demos/gpt/original.py", "demos/gpt/ported.py", "--map", "demos/gpt/map.toml", "--no-rerun", "--break-on-mismatch",
        environment={"TRACETUI_DEMO_BUG": "attention_scale"},
    )
    stop = debugging.until_prompt()
    assert "DIVERGED" in stop  # the headless report comes first
    assert "module  model.layers.0.self_attn (GptAttention), call 0" in stop
    assert "paired  original transformer.h.0.attn (CausalSelfAttention), call 0" in stop
    assert_stopped_at(stop, "ported.py", first_statement_line(GPT / "ported.py", "GptAttention"))
    assert debugging.send("p hidden_states.shape").strip() == "torch.Size([1, 12, 64])"
    # the original calls its argument `hidden`; the comparison paired it with `hidden_states`
    assert "hidden_states vs the original's input hidden: max |Δ| 0" in debugging.send("p ctx.diff(hidden_states)")
    output, status = debugging.finish("c")
    assert "the run finished" in output
    assert status == 1


def test_ctx_try_fix_applies_the_suggested_fix_at_the_prompt(session) -> None:
    debugging = session(
        "demos/gpt/original.py", "demos/gpt/ported.py", "--map", "demos/gpt/map.toml", "--no-rerun", "--break-on-mismatch",
        environment={"TRACETUI_DEMO_BUG": "activation"},
    )
    stop = debugging.until_prompt()
    assert "fix: replacing" in stop  # the headless report's fix line
    assert "ctx.try_fix(0)" in stop  # the banner says how to try it
    assert "applied: replacing" in debugging.send("p ctx.try_fix(0)")
    assert "undone: replacing" in debugging.send("p ctx.undo_fixes()")
    output, status = debugging.finish("c")
    assert "the run finished" in output
    assert status == 1


def test_break_at_on_the_original_side(session) -> None:
    debugging = session(
        "demos/gpt/original.py", "demos/gpt/ported.py", "--map", "demos/gpt/map.toml", "--no-rerun",
        "--side", "original", "--break-at", "transformer.h.1.mlp",
        environment={"TRACETUI_DEMO_BUG": "activation"},
    )
    stop = debugging.until_prompt()
    assert "stopped in the original model" in stop
    assert "paired  ported model.layers.1.mlp (GptMLP), call 0" in stop
    assert_stopped_at(stop, "original.py", first_statement_line(GPT / "original.py", "MLP"))
    assert "'hidden_states': float32[1, 12, 64]" in debugging.send("p ctx.other.inputs")
    assert "hidden vs the ported's input hidden_states: max |Δ| 0" in debugging.send("p ctx.diff(hidden)")
    output, status = debugging.finish("c")
    assert status == 1


def test_breakpoint_in_a_forward_from_an_installed_package(session, tiny_pair) -> None:
    original, ported = tiny_pair
    debugging = session(str(original), str(ported), "--no-rerun", "--break-at", "head")
    stop = debugging.until_prompt()
    linear_file = Path(torch.nn.modules.linear.__file__)
    assert "module  head (Linear), call 0" in stop
    assert str(linear_file) in stop
    assert_stopped_at(stop, linear_file.name, first_statement_line(linear_file, "Linear"))
    assert debugging.send("p input.shape").strip() == "torch.Size([2, 4])"
    # the gate before it diverged, so the head's input already differs from the original's
    assert re.search(r"input vs the original's input input: max \|Δ\| \S+, 8 of 8 over", debugging.send("p ctx.diff(input)"))
    output, status = debugging.finish("c")
    assert status == 1


def test_quit_mid_run_exits_cleanly(session, tiny_pair) -> None:
    original, ported = tiny_pair
    debugging = session(str(original), str(ported), "--no-rerun", "--break-at", "shared:1")
    debugging.until_prompt()
    assert debugging.send("p step").strip() == "1"
    output, status = debugging.finish("q")
    assert "debugger: quit; the run was stopped." in output
    assert "Traceback" not in output and "BdbQuit" not in output
    assert status == 1  # the comparison's status, as for `c`


def test_the_full_prompt_toolkit_prompt_works_in_a_pseudo_terminal(session, tiny_pair) -> None:
    original, ported = tiny_pair
    # An xterm: prompt toolkit draws its own prompt. pexpect does not answer cursor position requests.
    debugging = session(
        str(original), str(ported), "--no-rerun", "--break-at", "shared:1", term="xterm",
        environment={"PROMPT_TOOLKIT_NO_CPR": "1"},
    )
    debugging.child.expect_exact("ipdb>")
    debugging.child.sendline("p step * 1000 + 7")
    debugging.child.expect_exact("1007")
    debugging.child.expect_exact("ipdb>")
    output, status = debugging.finish("c")
    assert "the run finished" in output
    assert status == 1


# -- errors and nothing-to-do, without a prompt ----------------------------------------------------


@pytest.fixture
def tracetui_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run the command's main() in-process (no prompt is reached): exit status, stdout, stderr."""
    from tracetui.cli import main

    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("TRACETUI_DEMO_BUG", raising=False)

    def run(*arguments: str) -> tuple[int, str, str]:
        try:
            status = main(list(arguments))
        except SystemExit as exit:  # argparse's own usage errors
            status = int(exit.code or 0)
        captured = capsys.readouterr()
        return status, captured.out, " ".join(captured.err.split())

    return run


def test_unknown_name_exits_2_and_lists_the_closest_names(tiny_pair) -> None:
    original, ported = tiny_pair
    result = run_tracetui("compare", str(original), str(ported), "--no-rerun", "--break-at", "shraed")
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "no module named 'shraed' in the ported model" in message
    assert "Closest names: shared" in message
    assert "Traceback" not in result.stderr


def marking_pair(directory: Path) -> tuple[Path, Path, Path, Path]:
    """The tiny pair, each forward pass appending to a marker file of its own side."""
    paths = []
    for side, activation in (("original", "tanh"), ("ported", "sigmoid")):
        marker = directory / f"{side}.ran"
        first_line = "        hidden_states = input_values\n"
        marking = f"        open({str(marker)!r}, 'a').write('ran')\n"
        source = TINY_MODEL.replace("{activation}", activation).replace(first_line, marking + first_line)
        script = directory / f"{side}.py"
        script.write_text(source)
        paths += [script, marker]
    original, original_marker, ported, ported_marker = paths
    return original, ported, original_marker, ported_marker


@pytest.mark.parametrize("side", ["ported", "original"])
def test_a_misspelt_break_at_name_fails_before_either_model_runs(tmp_path: Path, side: str) -> None:
    """Checked against the built model, before recording: exit 2 with the closest names, and
    neither forward pass ran (no marker file) — not after the whole comparison."""
    original, ported, original_marker, ported_marker = marking_pair(tmp_path)
    result = run_tracetui("compare", str(original), str(ported), "--no-tui", "--side", side, "--break-at", "shraed")
    message = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stderr
    assert f"no module named 'shraed' in the {side} model" in message and "Closest names: shared" in message
    assert "Traceback" not in result.stderr
    assert not original_marker.exists() and not ported_marker.exists()
    # The same script with a right name does run, both sides (the markers prove the markers work).
    result = run_tracetui("compare", str(original), str(ported), "--no-tui", "--no-rerun", "--side", side, "--break-at", "shared:7")
    assert result.returncode == 2 and "there is no call 7" in " ".join(result.stderr.split())
    assert original_marker.exists() and ported_marker.exists()


@pytest.mark.parametrize("side", ["ported", "original"])
def test_a_misspelt_break_at_name_with_stream_fails_before_either_model_runs(tmp_path: Path, side: str) -> None:
    """--stream builds one model at a time: the port is built once more to check its name first,
    so a misspelt name fails before the original's recording, not after it."""
    original, ported, original_marker, ported_marker = marking_pair(tmp_path)
    result = run_tracetui("compare", str(original), str(ported), "--no-tui", "--stream", "--side", side, "--break-at", "shraed")
    assert result.returncode == 2 and "Closest names: shared" in " ".join(result.stderr.split())
    assert not original_marker.exists() and not ported_marker.exists()


def test_break_on_mismatch_on_a_matching_pair_has_nothing_to_break_at(tiny_pair, tracetui_main) -> None:
    original, _ = tiny_pair
    status, output, _ = tracetui_main("compare", str(original), str(original), "--no-rerun", "--break-on-mismatch")
    assert status == 0
    assert "MATCH" in output
    assert "nothing to break at" in output
    assert "ipdb" not in output


def test_a_name_of_the_other_side_suggests_side(tracetui_main) -> None:
    status, _, message = tracetui_main(
        "compare", str(GPT / "original.py"), str(GPT / "ported.py"), "--map", str(GPT / "map.toml"), "--no-rerun",
        "--break-at", "transformer.h.1.mlp.act",
    )
    assert status == 2
    # Told before either model runs: the ported counterpart's name needs the pairing, so it is not given.
    assert "no module named 'transformer.h.1.mlp.act' in the ported model" in message
    assert "It is a module of the original model: add --side original, or name its ported counterpart." in message


def test_a_module_that_never_runs_has_its_own_message(tiny_pair, tracetui_main) -> None:
    original, ported = tiny_pair
    status, _, message = tracetui_main("compare", str(original), str(ported), "--no-rerun", "--break-at", "unused")
    assert status == 2
    assert "module unused exists in the ported model" in message
    assert "never ran" in message


def test_a_call_index_past_the_last_call(tiny_pair, tracetui_main) -> None:
    original, ported = tiny_pair
    status, _, message = tracetui_main("compare", str(original), str(ported), "--no-rerun", "--break-at", "shared:3")
    assert status == 2
    assert "ran 3 times (calls 0 to 2); there is no call 3" in message


def test_a_side_given_as_a_trace_file_cannot_be_rerun(tiny_pair, tmp_path, tracetui_main) -> None:
    original, ported = tiny_pair
    trace_file = tmp_path / "ported.trace"
    assert tracetui_main("record", str(ported), "-o", str(trace_file), "--no-rerun")[0] == 0
    status, _, message = tracetui_main("compare", str(original), str(trace_file), "--no-rerun", "--break-on-mismatch")
    assert status == 2
    assert "the ported side is a trace file" in message
    assert "needs the ported model script (.py)" in message


def test_option_mistakes_are_usage_errors(tiny_pair, tracetui_main) -> None:
    original, ported = tiny_pair
    status, _, message = tracetui_main("compare", str(original), str(ported), "--side", "original")
    assert status == 2
    assert "--side chooses the model to stop in" in message
    status, _, message = tracetui_main("compare", str(original), str(ported), "--break-at", "gate:first")
    assert status == 2
    assert "expected QUALNAME[:CALL]" in message
    status, _, message = tracetui_main("compare", str(original), str(ported), "--break-at", "gate", "--break-on-mismatch")
    assert status == 2 and "not allowed with" in message  # argparse


# -- in-process ------------------------------------------------------------------------------------


@pytest.fixture
def tiny_comparison(tiny_pair):
    original, ported = tiny_pair
    return api.compare(original, ported, rerun=False)


def hooks_left(model: torch.nn.Module) -> list[str]:
    return [
        name
        for name, module in model.named_modules()
        if module._forward_hooks or module._forward_pre_hooks or module._forward_hooks_always_called
    ]


def test_after_quit_the_model_has_no_hooks_and_the_tracer_is_restored(tiny_comparison, tiny_pair, typed_at_prompt, capsys) -> None:
    _, ported = tiny_pair
    script = load_script(ported)
    row = find_row(tiny_comparison, "ported", "shared", 1)
    global_hooks = dict(torch.nn.modules.module._global_forward_pre_hooks), dict(torch.nn.modules.module._global_forward_hooks)

    def outer_tracer(frame, event, argument):  # stands in for coverage or another tool
        return None

    excepthook = sys.excepthook
    sigint_handler = signal.getsignal(signal.SIGINT)
    main_module = sys.modules["__main__"]
    typed_at_prompt("p step\np ctx.diff(hidden_states)\nq\n")
    sys.settrace(outer_tracer)
    try:
        outcome = debug_script_call(tiny_comparison, row, "ported", script)
        tracer_after = sys.gettrace()
    finally:
        sys.settrace(None)
    output = plain(capsys.readouterr().out)

    assert outcome == "quit"
    assert_stopped_at(output, "ported.py", first_statement_line(ported, "Shared"))
    assert "ipdb> 1\n" in output
    assert "0 of 8 over atol 0.001" in output
    assert tracer_after is outer_tracer
    assert hooks_left(script.model) == []
    assert (dict(torch.nn.modules.module._global_forward_pre_hooks), dict(torch.nn.modules.module._global_forward_hooks)) == global_hooks
    assert not hasattr(builtins, "ctx")
    assert sys.excepthook is excepthook
    assert signal.getsignal(signal.SIGINT) is sigint_handler
    assert sys.modules["__main__"] is main_module
    frame = sys._getframe()
    while frame is not None:
        assert getattr(frame.f_trace, "__self__", None) is None or "Pdb" not in type(frame.f_trace.__self__).__name__
        frame = frame.f_back
    # the model still runs normally afterwards, without stopping
    with torch.no_grad():
        script.model(script.inputs)


def test_continue_runs_to_the_end_and_cleans_up(tiny_comparison, tiny_pair, typed_at_prompt, capsys) -> None:
    _, ported = tiny_pair
    row = find_row(tiny_comparison, "ported", "gate", 0)
    typed_at_prompt("p ctx.diff_output(torch.sigmoid(hidden_states))\nc\n")
    tracer_before = sys.gettrace()
    sigint_handler = signal.getsignal(signal.SIGINT)
    outcome = debug_call(tiny_comparison, row, "ported", ported)
    output = plain(capsys.readouterr().out)
    assert outcome == "continued"
    assert "ported result vs original recorded outputs:" in output
    assert sys.gettrace() is tracer_before
    assert signal.getsignal(signal.SIGINT) is sigint_handler  # pdb's `c` installs its own
    assert not hasattr(builtins, "ctx")


def test_a_call_that_never_starts_is_not_reached() -> None:
    module = torch.nn.Linear(2, 2)
    stops: list[object] = []
    breakpoint = ForwardBreakpoint(module, call=5, on_stop=stops.append)
    with breakpoint.installed():
        for _ in range(3):
            module(torch.ones(1, 2))
    assert not breakpoint.stopped and stops == []
    assert hooks_left(module) == []


def test_debug_call_needs_a_script_for_the_side(tiny_comparison, tmp_path) -> None:
    trace_comparison = tiny_comparison
    trace_comparison.ported.source = str(tmp_path / "ported.trace")
    with pytest.raises(UsageError, match="the ported side is a trace file"):
        debug_call(trace_comparison, trace_comparison.culprit, "ported")


def test_ctx_diff_finds_the_counterpart_by_name_then_by_shape(tiny_comparison, tiny_pair) -> None:
    _, ported = tiny_pair
    row = find_row(tiny_comparison, "ported", "head", 0)
    context = DebugContext(tiny_comparison, row, "ported", ported)
    recorded_input = context.this.inputs["input"]

    input = recorded_input.clone()  # noqa: A001 — the forward's own parameter name
    by_name = context.diff(input)
    assert by_name.label == "input vs the original's input input"
    assert by_name.over_tolerance == 8 and not by_name.within_tolerance

    renamed = context.other.inputs["input"].clone()
    by_shape = context.diff(renamed)
    assert by_shape.max_abs == 0.0 and by_shape.within_tolerance

    assert "within tolerance" in repr(context.diff(renamed, "input"))
    with pytest.raises(LookupError, match="has no input 'nothing'"):
        context.diff(renamed, "nothing")
    with pytest.raises(LookupError, match="no original input has the name"):
        context.diff(torch.ones(3, 3))

    result = context.diff_output(context.other.outputs["output"].clone())
    assert "output: max |Δ| 0" in repr(result)
    assert "'input': float32[2, 4]" in repr(context.other.inputs)
    assert "module  head (Linear), call 0" in repr(context)


def test_parse_break_at() -> None:
    assert parse_break_at("model.layers.0.mlp") == ("model.layers.0.mlp", 0)
    assert parse_break_at("model.layers.0.mlp:2") == ("model.layers.0.mlp", 2)
    assert parse_break_at("(root)") == ("", 0)
    assert parse_break_at("(root):1") == ("", 1)
    with pytest.raises(UsageError):
        parse_break_at("model:x")


def test_find_row_messages(tiny_comparison) -> None:
    names = lambda: ["", "shared", "shared.proj", "gate", "unused", "head"]  # noqa: E731
    assert find_row(tiny_comparison, "original", "shared", 2).original.call == 2
    with pytest.raises(UsageError, match="never ran"):
        find_row(tiny_comparison, "ported", "unused", 0, model_names=names)
    with pytest.raises(UsageError, match="Closest names: gate"):
        find_row(tiny_comparison, "ported", "gaet", 0, model_names=names)
    with pytest.raises(UsageError, match=re.escape("ran once (call 0); there is no call 1")):
        find_row(tiny_comparison, "ported", "gate", 1)


def test_ctx_gives_way_to_a_forward_that_has_its_own_ctx() -> None:
    from tracetui.debugger import context_name_for

    def forward(ctx, value):  # autograd Functions name their first argument ctx
        return sys._getframe()

    def plain_forward(value):
        return sys._getframe()

    assert context_name_for(forward(None, 1)) == "tracetui_ctx"
    assert context_name_for(plain_forward(1)) == "ctx"

