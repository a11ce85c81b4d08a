"""Bounded memory, on real models: spilled, streamed and statistics-only comparisons.

1. ``spill=`` and ``stream=True`` give the in-memory answer on the demos (verdict, culprit,
   every row's status and max |Δ|).
2. ``keep="stats"`` reports lower bounds, flagged as such; ``only=`` keeps full values where asked.
3. Spilled traces on disk: layout, round trip, memory-mapped tensors, unfinished and damaged ones.
4. Memory really is bounded: peak anonymous memory measured in subprocesses.
5. The CLI end to end: ``record --spill`` then ``compare --stream``; usage errors.
"""

from __future__ import annotations

import functools
import gc
import importlib
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
import torch

import tracetui
from tracetui.cli import main
from tracetui.compare import Comparison
from tracetui.errors import ScriptError, TraceFileError
from tracetui.json_report import report_document
from tracetui.rows import Row
from tracetui.spill import SpillStore
from tracetui.trace import Trace
from tracetui.tracefile import INDEX_NAME, load_trace, save_trace

# `tracetui.record` is the API function (tracetui/__init__.py re-exports it), which shadows the
# module of the same name: `import tracetui.record as m` or monkeypatch.setattr("tracetui.record.X")
# would reach the function. The module itself is only reachable through sys.modules.
record_module = importlib.import_module("tracetui.record")
tracefile_module = importlib.import_module("tracetui.tracefile")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMOS_DIR = REPO_ROOT / "demos"
BUG_ENV_VAR = "TRACETUI_DEMO_BUG"
ATOL = 1e-3  # tracetui's default tolerance
SAME = 1e-12  # "the same number": exactly equal, or within this


def load_ported_demo(demo: str) -> ModuleType:
    """demos/<demo>/ported.py under a module name of its own (only its BUGS dict is needed)."""
    name = f"_test_bounded_memory_{demo}_ported"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, DEMOS_DIR / demo / "ported.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


BUGS = {demo: load_ported_demo(demo).BUGS for demo in ("gpt", "bert")}


@pytest.fixture(autouse=True)
def no_bug_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A TRACETUI_DEMO_BUG left in the developer's shell must not leak into a clean run."""
    monkeypatch.delenv(BUG_ENV_VAR, raising=False)


def demo_paths(demo: str) -> tuple[Path, Path, Path]:
    return DEMOS_DIR / demo / "original.py", DEMOS_DIR / demo / "ported.py", DEMOS_DIR / demo / "map.toml"


def compare_demo(demo: str, bug: str | None, monkeypatch: pytest.MonkeyPatch, **options: object) -> Comparison:
    if bug:
        monkeypatch.setenv(BUG_ENV_VAR, bug)
    else:
        monkeypatch.delenv(BUG_ENV_VAR, raising=False)
    original, ported, rename_map = demo_paths(demo)
    return tracetui.compare(original, ported, rename_map=rename_map, **options)  # type: ignore[arg-type]


_in_memory: dict[tuple[str, str | None], Comparison] = {}


def in_memory(demo: str, bug: str | None, monkeypatch: pytest.MonkeyPatch) -> Comparison:
    """The reference: the default in-memory comparison (computed once per demo and bug)."""
    if (demo, bug) not in _in_memory:
        reference = compare_demo(demo, bug, monkeypatch)
        # The reference must be worth comparing with: the clean port matches, a bug is found
        # where the demo says it is (else "same answer" could mean "the same wrong answer").
        if bug is None:
            assert reference.verdict == "match", reference.reason
        else:
            assert reference.verdict == "diverged" and reference.culprit is not None
            assert reference.culprit.ported_name == BUGS[demo][bug], reference.reason
        _in_memory[demo, bug] = reference
    return _in_memory[demo, bug]


def row_table(comparison: Comparison) -> list[tuple[str | None, str | None, int, str]]:
    return [(row.original_name, row.ported_name, row.call, comparison.status(row)) for row in comparison.rows]


def culprit_names(comparison: Comparison) -> tuple[str | None, str | None] | None:
    culprit = comparison.culprit
    return None if culprit is None else (culprit.original_name, culprit.ported_name)


def same_number(first: float | None, second: float | None) -> bool:
    if first is None or second is None:
        return first is second
    return first == second or abs(first - second) <= SAME


def measured_pairs(row: Row) -> list:
    return [pair for pair in row.inputs + row.outputs if pair.difference is not None]


def all_tensor_leaves(trace: Trace) -> list:
    return [leaf for record in trace.records for leaf in record.inputs + record.outputs if leaf.is_tensor]


# --------------------------------------------------------------------- /proc/self/maps helpers


def file_of_mapping(tensor: torch.Tensor) -> str | None:
    """The file whose memory map holds ``tensor``'s data, or None when it is anonymous memory.

    A robust way to tell a memory-mapped tensor: ``untyped_storage().filename`` is not set for
    the storages safetensors hands out, and checking RSS growth would depend on the page cache;
    the kernel's own list of this process's mappings says where each address comes from.
    """
    address = tensor.untyped_storage().data_ptr()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            low, high = (int(bound, 16) for bound in fields[0].split("-"))
            if low <= address < high:
                return fields[5].strip() if len(fields) == 6 and fields[5].startswith("/") else None
    return None


needs_proc = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")


def small_shards(monkeypatch: pytest.MonkeyPatch, shard_bytes: int) -> None:
    """Shards of ``shard_bytes`` for recordings (``record --spill``) and saved directory traces.

    tracetui.spill.SHARD_BYTES cannot simply be patched: it is SpillStore's default argument,
    bound when the class was defined.
    """
    store = functools.partial(SpillStore, shard_bytes=shard_bytes)
    monkeypatch.setattr(record_module, "SpillStore", store)
    monkeypatch.setattr(tracefile_module, "SpillStore", store)


# ============================================================== 1. the same answer as in memory

SAME_ANSWER_CASES = [
    ("gpt", None),
    ("gpt", "activation"),
    ("gpt", "attention_scale"),
    ("gpt", "missing_residual"),
    ("bert", None),
    ("bert", "dropout"),  # nondeterministic: the run-to-run check must agree too
    ("bert", "swapped_qk"),
]


@pytest.mark.parametrize("mode", ["spill", "stream"])
@pytest.mark.parametrize(("demo", "bug"), SAME_ANSWER_CASES, ids=[f"{demo}-{bug or 'clean'}" for demo, bug in SAME_ANSWER_CASES])
def test_spilled_and_streamed_compares_give_the_in_memory_answer(
    demo: str, bug: str | None, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = in_memory(demo, bug, monkeypatch)
    if mode == "spill":
        bounded = compare_demo(demo, bug, monkeypatch, spill=tmp_path / "spill")
    else:
        temporary = tmp_path / "tmp"
        temporary.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(temporary))
        bounded = compare_demo(demo, bug, monkeypatch, stream=True)

    assert bounded.verdict == reference.verdict
    assert culprit_names(bounded) == culprit_names(reference)
    assert row_table(bounded) == row_table(reference)
    for bounded_row, reference_row in zip(bounded.rows, reference.rows, strict=True):
        label = reference_row.label
        assert same_number(bounded_row.output_max_abs, reference_row.output_max_abs), (
            label,
            bounded_row.output_max_abs,
            reference_row.output_max_abs,
        )
        assert same_number(bounded_row.input_max_abs, reference_row.input_max_abs), (
            label,
            bounded_row.input_max_abs,
            reference_row.input_max_abs,
        )

    if mode == "spill":
        for side in ("original", "ported"):
            assert (tmp_path / "spill" / side / INDEX_NAME).is_file()
            assert list((tmp_path / "spill" / side).glob("tensors-*.safetensors"))
    else:
        # The port was measured live and kept statistics only; the original's temporary
        # directory is gone, and its tensors are still readable (mapped files outlive unlinking).
        assert not any(leaf.tensor is not None for leaf in all_tensor_leaves(bounded.ported))
        assert list(temporary.iterdir()) == []
        original_tensors = bounded.original.unique_tensors()
        assert original_tensors
        assert all(math.isfinite(float(tensor.double().sum())) for tensor in original_tensors)


# ================================================================ 2. statistics only is honest


@pytest.mark.parametrize("bug", [None, "activation", "missing_residual", "unconverted_weight", "norm_eps"])
def test_statistics_only_reports_flagged_lower_bounds_and_the_same_culprit(bug: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = in_memory("gpt", bug, monkeypatch)
    statistics = compare_demo("gpt", bug, monkeypatch, keep="stats")

    assert [row[:3] for row in row_table(statistics)] == [row[:3] for row in row_table(reference)]
    assert not any(leaf.tensor is not None for leaf in all_tensor_leaves(statistics.original) + all_tensor_leaves(statistics.ported))
    proven = 0.0
    for statistics_row, reference_row in zip(statistics.rows, reference.rows, strict=True):
        for pair in measured_pairs(statistics_row):
            assert pair.difference.from_statistics, (reference_row.label, pair.name)
        for pair in measured_pairs(reference_row):
            assert not pair.difference.from_statistics, (reference_row.label, pair.name)
        for bound, exact in (
            (statistics_row.output_max_abs, reference_row.output_max_abs),
            (statistics_row.input_max_abs, reference_row.input_max_abs),
        ):
            assert (bound is None) == (exact is None), reference_row.label
            if bound is not None:
                assert bound <= exact + SAME, f"{reference_row.label}: statistics claim {bound} > the exact {exact}"
                proven = max(proven, bound)

    assert statistics.verdict == reference.verdict
    assert culprit_names(statistics) == culprit_names(reference)
    if bug is not None:
        assert proven > ATOL  # the statistics do prove the difference, not merely fail to rule it out


ONLY = r"\.mlp\.c_fc$"


def test_only_keeps_full_values_for_matching_modules_and_statistics_elsewhere() -> None:
    script = demo_paths("gpt")[0]
    full = tracetui.record(script, rerun=False)
    partial = tracetui.record(script, rerun=False, only=ONLY)
    assert [(record.name, record.call) for record in partial] == [(record.name, record.call) for record in full]

    kept_for_matching: set[int] = set()
    matching_records = 0
    for record, full_record in zip(partial, full, strict=True):
        if re.search(ONLY, record.name) is None:
            continue
        matching_records += 1
        for leaf, full_leaf in zip(record.inputs + record.outputs, full_record.inputs + full_record.outputs, strict=True):
            if full_leaf.tensor is not None:
                assert leaf.tensor is not None and leaf.summary is None, (record.name, leaf.name)
                assert torch.equal(leaf.tensor, full_leaf.tensor), (record.name, leaf.name)
                kept_for_matching.add(id(leaf.tensor))
    assert matching_records >= 4  # one per layer

    summaries = shared = 0
    for record, full_record in zip(partial, full, strict=True):
        if re.search(ONLY, record.name) is not None:
            continue
        for leaf, full_leaf in zip(record.inputs + record.outputs, full_record.inputs + full_record.outputs, strict=True):
            if full_leaf.tensor is None:
                continue
            if leaf.tensor is not None:
                # Only the very tensor already copied for a matching module (c_fc's output is the
                # activation's input): handing the existing copy on costs nothing.
                assert id(leaf.tensor) in kept_for_matching, (record.name, leaf.name)
                shared += 1
                continue
            summaries += 1
            assert leaf.summary is not None, (record.name, leaf.name)
            values = full_leaf.tensor
            assert leaf.summary.shape == tuple(values.shape)
            assert leaf.summary.minimum == float(values.min()) and leaf.summary.maximum == float(values.max())
            # The mean may be accumulated in float32: within float32 rounding of the exact mean.
            exact_mean, scale = float(values.double().mean()), float(values.double().abs().mean())
            assert abs(leaf.summary.mean - exact_mean) <= 1e-6 * scale + 1e-12, (record.name, leaf.name)
    assert summaries > 4 * matching_records
    assert shared >= matching_records  # each c_fc output is the next activation's input


@needs_proc
def test_streamed_compare_with_only_keeps_the_ports_matching_tensors_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = in_memory("gpt", "activation", monkeypatch)
    only = r"^model\.layers\.1\.mlp|^transformer\.h\.1\.mlp"
    streamed = compare_demo("gpt", "activation", monkeypatch, stream=True, only=only, spill=tmp_path / "spill")
    assert culprit_names(streamed) == culprit_names(reference)
    assert row_table(streamed) == row_table(reference)

    # The port's values are kept (spilled next to the original's) for the matching calls only;
    # elsewhere it keeps statistics, bar a copy already made for a matching call.
    directory = tmp_path / "spill" / "ported"
    assert (directory / INDEX_NAME).is_file()
    shards = {str(path.resolve()) for path in directory.glob("tensors-*.safetensors")}
    matching = [record for record in streamed.ported if re.search(only, record.name)]
    assert len(matching) >= 4  # the mlp, fc_in, act_fn, fc_out of layer 1
    kept = set()
    for record in matching:
        for leaf in record.tensor_inputs() + record.tensor_outputs():
            assert leaf.tensor is not None and file_of_mapping(leaf.tensor) in shards, (record.name, leaf.name)
            kept.add(id(leaf.tensor))
    statistics_only = 0
    for record in streamed.ported:
        if re.search(only, record.name) is None:
            for leaf in record.tensor_inputs() + record.tensor_outputs():
                assert leaf.tensor is None or id(leaf.tensor) in kept, (record.name, leaf.name)
                statistics_only += leaf.tensor is None
    assert statistics_only > 10 * len(matching)


# ============================================================== 3. spilled traces on disk


def assert_same_trace(trace: Trace, reference: Trace) -> None:
    assert len(trace) == len(reference)
    for record, expected in zip(trace, reference, strict=True):
        assert (record.name, record.class_name, record.call, record.depth, record.parent, record.kind, record.finished) == (
            expected.name,
            expected.class_name,
            expected.call,
            expected.depth,
            expected.parent,
            expected.kind,
            expected.finished,
        )
        leaves, expected_leaves = record.inputs + record.outputs, expected.inputs + expected.outputs
        assert [leaf.name for leaf in leaves] == [leaf.name for leaf in expected_leaves]
        for leaf, expected_leaf in zip(leaves, expected_leaves, strict=True):
            assert leaf.source == expected_leaf.source, (record.name, leaf.name)
            if expected_leaf.tensor is None:
                assert leaf.tensor is None and (leaf.value_type, leaf.value_repr) == (expected_leaf.value_type, expected_leaf.value_repr)
            else:
                assert leaf.tensor is not None and leaf.tensor.dtype == expected_leaf.tensor.dtype
                assert torch.equal(leaf.tensor, expected_leaf.tensor), (record.name, leaf.name)
    assert trace.seed == reference.seed
    assert trace.rerun_output_diff == reference.rerun_output_diff
    assert trace.rerun_input_diff == reference.rerun_input_diff
    # A tensor passed on unchanged is one tensor, in memory and on disk alike.
    assert len(trace.unique_tensors()) == len(reference.unique_tensors())


def assert_memory_mapped_from(trace: Trace, directory: Path) -> None:
    shards = {str(path.resolve()) for path in directory.glob("tensors-*.safetensors")}
    for tensor in trace.unique_tensors():
        if tensor.numel():
            assert file_of_mapping(tensor) in shards, f"a {list(tensor.shape)} tensor is not mapped from a shard of {directory}"


@needs_proc
def test_spilled_recording_round_trips_memory_mapped_across_several_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The bert port with dropout left on: nondeterministic, so the run-to-run differences are
    # not all zero and their round trip means something.
    monkeypatch.setenv(BUG_ENV_VAR, "dropout")
    script = demo_paths("bert")[1]
    reference = tracetui.record(script, rerun=True)
    assert reference.rerun_output_diff is not None and max(reference.rerun_output_diff) > ATOL
    shard_bytes = 64 * 1024
    assert reference.nbytes() > 3 * shard_bytes
    small_shards(monkeypatch, shard_bytes)

    directory = tmp_path / "trace"
    spilled = tracetui.record(script, rerun=True, spill=directory)
    shards = sorted(path.name for path in directory.glob("tensors-*.safetensors"))
    assert len(shards) >= 3
    assert sorted(path.name for path in directory.iterdir()) == sorted([INDEX_NAME, *shards])
    assert shards == [f"tensors-{number:05d}.safetensors" for number in range(len(shards))]
    index = json.loads((directory / INDEX_NAME).read_text())
    assert set(index["tensor_files"].values()) == set(shards)

    assert_same_trace(spilled, reference)  # the trace handed back reads the shards already
    assert_memory_mapped_from(spilled, directory)
    loaded = load_trace(directory)
    assert_same_trace(loaded, reference)
    assert_memory_mapped_from(loaded, directory)

    # The same trace saved afterwards in the directory layout, a few shards at a time.
    saved = save_trace(reference, tmp_path / "saved")
    assert len(list(saved.glob("tensors-*.safetensors"))) >= 3
    reloaded = load_trace(saved)
    assert_same_trace(reloaded, reference)
    assert_memory_mapped_from(reloaded, saved)


FAILING_SCRIPT = """
import torch
from torch import nn

class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("planted failure in the middle of the forward pass")

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(64, 64)
        self.second = nn.Linear(64, 64)
        self.boom = Boom()

    def forward(self, x):
        return self.boom(self.second(self.first(x)))

def build():
    return Net(), torch.randn(32, 64)
"""

SMALL_SCRIPT = FAILING_SCRIPT.replace("return self.boom(self.second(self.first(x)))", "return self.second(self.first(x))")


def test_a_recording_that_did_not_finish_is_named_as_such(write_script, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    small_shards(monkeypatch, 1024)
    script = write_script("failing.py", FAILING_SCRIPT)
    directory = tmp_path / "trace"
    with pytest.raises(ScriptError, match="planted failure"):
        tracetui.record(script, rerun=False, spill=directory)
    shards = list(directory.glob("tensors-*.safetensors"))
    assert len(shards) >= 2 and not (directory / INDEX_NAME).exists()

    with pytest.raises(TraceFileError, match=rf"{len(shards)} tensor shard\(s\) but no {INDEX_NAME}: the recording did not finish"):
        load_trace(directory)
    assert main(["compare", str(directory), str(write_script("other.py", SMALL_SCRIPT)), "--no-tui"]) == 2
    error = capsys.readouterr().err
    assert "did not finish" in error and "Traceback" not in error


@pytest.mark.parametrize("damage", ["half", "header", "missing"])
def test_a_damaged_shard_is_named(damage: str, write_script, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small_shards(monkeypatch, 1024)
    directory = tmp_path / "trace"
    tracetui.record(write_script("small.py", SMALL_SCRIPT), rerun=False, spill=directory)
    gc.collect()  # nothing of ours maps the shard any more when it is cut short
    shards = sorted(directory.glob("tensors-*.safetensors"))
    assert len(shards) >= 3
    shard = shards[1]
    data = shard.read_bytes()
    if damage == "half":
        shard.write_bytes(data[: len(data) // 2])
    elif damage == "header":
        shard.write_bytes(data[:4])
    else:
        shard.unlink()
    with pytest.raises(TraceFileError) as error:
        load_trace(directory)
    assert str(shard) in str(error.value)
    assert "missing, corrupt or truncated" in str(error.value)


def test_spilling_refuses_a_directory_that_is_not_a_trace(write_script, tmp_path: Path) -> None:
    directory = tmp_path / "notes"
    directory.mkdir()
    (directory / "notes.txt").write_text("keep me")
    with pytest.raises(TraceFileError, match="not a tracetui trace"):
        tracetui.record(write_script("small.py", SMALL_SCRIPT), rerun=False, spill=directory)
    assert [path.name for path in directory.iterdir()] == ["notes.txt"]


# =========================================================== 4. memory is bounded, measured

# Why not RLIMIT_DATA: it counts private writable mappings, and safetensors maps a file with
# torch's UntypedStorage.from_file(shared=False), i.e. MAP_PRIVATE + PROT_READ|PROT_WRITE
# ("rw-p" in /proc/self/maps) — checked: with RLIMIT_DATA 200 MB above the current VmData,
# safe_open(...).get_tensor of a 400 MB tensor fails with "unable to mmap ... Cannot allocate
# memory", while a read-only mmap of the same file does not count at all. So a streamed
# compare, which maps the whole original trace, is charged for it as if it held it, although
# those pages are file pages the kernel can drop. What bounded memory promises is anonymous
# memory (what cannot be paged out without swap): each child measures its peak RssAnon.
#
# glibc keeps freed blocks for reuse and the RSS then shows what was once used, not what is
# in use; MALLOC_MMAP_THRESHOLD_ makes every large block its own mapping, returned on free.

MEMORY_CHILD = r"""
import importlib, json, sys, threading, time
from pathlib import Path

def rss_anon():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")

import torch
import tracetui
from tracetui.spill import SpillStore

mode, directory, shard_bytes = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
importlib.import_module("tracetui.record").SpillStore = lambda path: SpillStore(path, shard_bytes=shard_bytes)
options = {"memory": {}, "stream": {"stream": True, "spill": directory / "spill"}, "spill": {"spill": directory / "spill"}}[mode]

peak = 0
running = True
def sample():
    global peak
    while running:
        peak = max(peak, rss_anon())
        time.sleep(0.002)

torch.set_num_threads(1)
baseline = rss_anon()
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
comparison = tracetui.compare(directory / "original.py", directory / "ported.py", rerun=False, **options)
running = False
sampler.join()
peak = max(peak, rss_anon())
culprit = comparison.culprit
print(json.dumps({
    "peak": peak - baseline,
    "verdict": comparison.verdict,
    "culprit": None if culprit is None else [culprit.original_name, culprit.ported_name],
    "original_bytes": comparison.original.nbytes(),
    "ported_bytes": comparison.ported.nbytes(),
}))
"""

WIDE_MODEL = """
import torch
from torch import nn

LAYERS, WIDTH, BATCH = {layers}, {width}, {batch}
BUGGY_LAYER = {buggy_layer}  # -1 for the original


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.ModuleList(nn.Linear(WIDTH, WIDTH) for _ in range(LAYERS))
        self.act = nn.ModuleList(nn.ReLU() if layer == BUGGY_LAYER else nn.GELU() for layer in range(LAYERS))

    def forward(self, x):
        for fc, act in zip(self.fc, self.act, strict=True):
            x = act(fc(x))
        return x


def build():
    torch.manual_seed(0)
    model = Net()
    return model, torch.randn(BATCH, WIDTH, generator=torch.Generator().manual_seed(1))
"""

WIDTH, BATCH = 128, 4096
ACTIVATION_BYTES = WIDTH * BATCH * 4  # 2 MiB: one recorded tensor
LAYER_WEIGHT_BYTES = (WIDTH * WIDTH + WIDTH) * 4
SHARD_BYTES = 4 * 2**20
SHALLOW, DEEP = 4, 24
MiB = 2**20


def start_memory_child(mode: str, layers: int, directory: Path) -> subprocess.Popen:
    directory.mkdir()
    for role, buggy_layer in (("original", -1), ("ported", layers - 3)):
        source = WIDE_MODEL.format(layers=layers, width=WIDTH, batch=BATCH, buggy_layer=buggy_layer)
        (directory / f"{role}.py").write_text(textwrap.dedent(source))
    (directory / "child.py").write_text(MEMORY_CHILD)
    environment = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1024 * 1024), OMP_NUM_THREADS="1")
    environment.pop(BUG_ENV_VAR, None)
    return subprocess.Popen(
        [sys.executable, str(directory / "child.py"), mode, str(directory), str(SHARD_BYTES)],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_memory_child(child: subprocess.Popen, layers: int) -> dict:
    stdout, stderr = child.communicate(timeout=900)
    assert child.returncode == 0, f"{child.args}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    result = json.loads(stdout.strip().splitlines()[-1])
    planted = f"act.{layers - 3}"
    assert result["verdict"] == "diverged" and result["culprit"] == [planted, planted], (child.args, result)
    return result


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads RssAnon from /proc/self/status")
def test_streamed_and_spilled_memory_stay_bounded_while_in_memory_grows_with_the_model(tmp_path: Path) -> None:
    runs = [("memory", DEEP), ("stream", SHALLOW), ("stream", DEEP), ("spill", SHALLOW), ("spill", DEEP)]
    children = {run: start_memory_child(run[0], run[1], tmp_path / f"{run[0]}-{run[1]}") for run in runs}
    results = {run: finish_memory_child(child, run[1]) for run, child in children.items()}
    peak = {run: result["peak"] for run, result in results.items()}
    report = ", ".join(f"{mode}@{layers}: {peak[mode, layers] / MiB:.0f} MiB" for mode, layers in runs)

    deep = results["memory", DEEP]
    trace_bytes = deep["original_bytes"]
    assert trace_bytes == deep["ported_bytes"] == (2 * DEEP + 1) * ACTIVATION_BYTES  # the input, each fc and act output
    assert deep["original_bytes"] + deep["ported_bytes"] > 190 * MiB
    assert results["stream", DEEP]["original_bytes"] == trace_bytes and results["stream", DEEP]["ported_bytes"] == 0

    # In memory, both traces are held: the peak is at least their size (which also shows that
    # the measurement sees recorded tensors).
    assert peak["memory", DEEP] >= 0.95 * 2 * trace_bytes, report

    # Streamed and spilled, six times the layers cost their weights and run-to-run noise (a few
    # MiB: when the sampler catches a measurement's float64 temporaries) — while each trace grows
    # by 2 * 20 activations, 80 MiB. What remains is a constant: the shard buffer, one call's
    # tensors and their measurement; less than one trace even at this modest depth.
    allowance = (DEEP - SHALLOW) * LAYER_WEIGHT_BYTES + 8 * ACTIVATION_BYTES
    assert allowance < 0.25 * 2 * (DEEP - SHALLOW) * ACTIVATION_BYTES
    for mode in ("stream", "spill"):
        assert peak[mode, DEEP] - peak[mode, SHALLOW] <= allowance, report
        assert peak[mode, DEEP] < trace_bytes, report
        assert peak[mode, DEEP] < 0.5 * peak["memory", DEEP], report


# ======================================================================== 5. the CLI end to end


def test_cli_records_a_spilled_trace_once_and_streams_each_port_against_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    original, ported, rename_map = demo_paths("gpt")
    bug = "unconverted_weight"
    reference = report_document(in_memory("gpt", bug, monkeypatch))["first_divergence"]
    assert reference is not None

    directory = tmp_path / "original"
    assert main(["record", str(original), "-o", str(directory), "--spill"]) == 0
    assert (directory / INDEX_NAME).is_file() and list(directory.glob("tensors-*.safetensors"))
    capsys.readouterr()

    compare = ["compare", str(directory), str(ported), "--map", str(rename_map), "--stream", "--no-tui"]
    monkeypatch.setenv(BUG_ENV_VAR, bug)
    report_path = tmp_path / "bug.json"
    assert main([*compare, "--json", str(report_path), "--spill", str(tmp_path / "work")]) == 1, capsys.readouterr()
    first_divergence = json.loads(report_path.read_text())["first_divergence"]
    # The fix search differs by design: streamed, the original's model (its weights) is gone.
    fix_keys = ("fixes", "fix_search")
    assert {key: value for key, value in first_divergence.items() if key not in fix_keys} == {
        key: value for key, value in reference.items() if key not in fix_keys
    }
    assert first_divergence["ported"] == BUGS["gpt"][bug]

    monkeypatch.delenv(BUG_ENV_VAR)
    clean_path = tmp_path / "clean.json"
    assert main([*compare, "--json", str(clean_path)]) == 0, capsys.readouterr()
    clean = json.loads(clean_path.read_text())
    assert clean["verdict"] == "match" and clean["first_divergence"] is None


@pytest.mark.parametrize(
    "command",
    [
        ["compare", "{original}", "{ported}", "--no-tui", "--only", "("],
        ["compare", "{original}", "{ported}", "--no-tui", "--stream", "--only", "("],
        ["record", "{original}", "-o", "{tmp}/trace", "--spill", "--only", "("],
    ],
    ids=["compare", "compare-stream", "record"],
)
def test_cli_bad_only_regex_is_a_usage_error(command: list[str], tmp_path: Path, capsys) -> None:
    original, ported, _ = demo_paths("gpt")
    arguments = [part.format(original=original, ported=ported, tmp=tmp_path) for part in command]
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert "--only '(' is not a valid regular expression" in error and "Traceback" not in error
    assert not (tmp_path / "trace").exists()


def test_cli_record_spill_to_a_file_name_is_a_usage_error(tmp_path: Path, capsys) -> None:
    output = tmp_path / "original.trace"
    assert main(["record", str(demo_paths("gpt")[0]), "-o", str(output), "--spill"]) == 2
    error = capsys.readouterr().err
    assert "--spill" in error and "directory" in error and "Traceback" not in error
    assert not output.exists()
