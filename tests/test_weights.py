"""The weight-conversion check: where every ported tensor came from, found by value, no map needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tracetui.cli import main
from tracetui.pairing.rename_map import parse_rename_rules
from tracetui.weights import check_weights, report_document

ROOT = Path(__file__).resolve().parents[1]


def random_state() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)

    def random(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    state = {
        "wte.weight": random(20, 8),
        "h.0.ln.weight": random(8),
        "h.0.attn.c_attn.weight": random(24, 8),  # fused q, k, v rows
        "h.0.attn.c_attn.bias": random(24),
        "h.0.attn.c_proj.weight": random(8, 8),
        "h.0.mlp.c_fc.weight": random(16, 8),
        "h.0.mlp.c_proj.weight": random(8, 16),
        "unused.weight": random(3, 3),
    }
    state["lm_head.weight"] = state["wte.weight"]  # tied
    return state


def sources_by_name(report) -> dict[str, object]:  # noqa: ANN001
    return {source.ported: source for source in report.sources}


def test_renamed_transposed_sliced_and_unconverted_tensors_are_told_apart() -> None:
    original = random_state()
    q, k, v = original["h.0.attn.c_attn.weight"].chunk(3, dim=0)
    ported = {
        "embed_tokens.weight": original["wte.weight"].clone(),
        "layers.0.norm.weight": original["h.0.ln.weight"].clone(),
        "layers.0.q_proj.weight": q.clone(),
        "layers.0.k_proj.weight": k.clone(),
        "layers.0.v_proj.weight": torch.randn(8, 8, generator=torch.Generator().manual_seed(99)),  # never converted
        "layers.0.k_proj.bias": original["h.0.attn.c_attn.bias"][8:16].clone(),
        "layers.0.o_proj.weight": original["h.0.attn.c_proj.weight"].clone(),
        "layers.0.up.weight": original["h.0.mlp.c_fc.weight"].t().contiguous(),  # Conv1D layout
        "layers.0.down.weight": original["h.0.mlp.c_proj.weight"].clone(),
        "lm_head.weight": original["lm_head.weight"].clone(),
    }
    report = check_weights(original, ported)
    found = sources_by_name(report)
    assert (found["embed_tokens.weight"].how, found["embed_tokens.weight"].original) == ("renamed", "wte.weight")
    assert (found["lm_head.weight"].how, found["lm_head.weight"].original) == ("same", "lm_head.weight")
    assert (found["layers.0.up.weight"].how, found["layers.0.up.weight"].original) == ("transposed", "h.0.mlp.c_fc.weight")
    query = found["layers.0.q_proj.weight"]
    assert (query.how, query.original, query.detail) == ("slice", "h.0.attn.c_attn.weight", "rows 0:8")
    key = found["layers.0.k_proj.weight"]
    assert (key.how, key.detail) == ("slice", "rows 8:16")
    assert (found["layers.0.k_proj.bias"].how, found["layers.0.k_proj.bias"].detail) == ("slice", "elements 8:16")
    assert found["layers.0.v_proj.weight"].how == "missing"
    assert [source.ported for source in report.problems] == ["layers.0.v_proj.weight"]
    assert not report.complete
    assert [tensor.name for tensor in report.unused] == ["unused.weight"]


def test_a_conv1d_style_chunk_along_columns_and_a_fused_tensor_are_found() -> None:
    original = random_state()
    fused_conv1d = original["h.0.attn.c_attn.weight"].t().contiguous()  # [8, 24]: GPT-2's Conv1D layout
    original_conv1d = {"c_attn.weight": fused_conv1d, "c_proj.weight": original["h.0.attn.c_proj.weight"]}
    ported = {
        "q.weight": fused_conv1d[:, 0:8].contiguous(),  # a chunk along dim 1, kept in Conv1D layout
        "k.weight": fused_conv1d[:, 8:16].t().contiguous(),  # and turned into a Linear weight
    }
    found = sources_by_name(check_weights(original_conv1d, ported))
    assert (found["q.weight"].how, found["q.weight"].detail) == ("slice", "columns 0:8")
    assert (found["k.weight"].how, found["k.weight"].detail) == ("slice", "columns 8:16 transposed")

    generator = torch.Generator().manual_seed(1)
    separate = {name: torch.randn(8, 8, generator=generator) for name in ("q.weight", "k.weight", "v.weight")}
    fused = {"qkv.weight": torch.cat([separate["q.weight"], separate["k.weight"], separate["v.weight"]])}
    source = check_weights(separate, fused).sources[0]
    assert source.how == "assembled"
    assert [(piece.original, piece.start, piece.stop) for piece in source.pieces] == [
        ("q.weight", 0, 8),
        ("k.weight", 0, 8),
        ("v.weight", 0, 8),
    ]


def test_rows_in_another_order_are_accounted_for_and_said_so() -> None:
    """llama2.c → transformers permutes q/k rows for RoPE: the values are all there, reordered."""
    weight = torch.randn(8, 4, generator=torch.Generator().manual_seed(2))
    permuted = weight.view(2, 2, 2, 4).transpose(1, 2).reshape(8, 4)
    source = check_weights({"wq.weight": weight}, {"q_proj.weight": permuted}).sources[0]
    assert (source.how, source.original) == ("assembled", "wq.weight")
    assert "rows in another order" in source.detail
    scrambled = weight.flatten()[torch.randperm(32, generator=torch.Generator().manual_seed(0))].view(8, 4)
    assert check_weights({"wq.weight": weight}, {"q_proj.weight": scrambled}).sources[0].how == "rearranged"


def test_a_cast_to_half_precision_is_found() -> None:
    original = random_state()
    ported = {"embed.weight": original["wte.weight"].half(), "norm.weight": original["h.0.ln.weight"].half()}
    found = sources_by_name(check_weights(original, ported))
    assert (found["embed.weight"].how, found["embed.weight"].cast) == ("renamed", "float32 → float16")
    assert found["norm.weight"].original == "h.0.ln.weight"
    brain_float = check_weights(original, {"q.weight": original["h.0.attn.c_attn.weight"][:8].bfloat16()}).sources[0]
    assert (brain_float.how, brain_float.detail, brain_float.cast) == ("slice", "rows 0:8", "float32 → bfloat16")


def test_with_a_map_a_tensor_from_another_name_is_a_problem() -> None:
    generator = torch.Generator().manual_seed(3)
    original = {"query.weight": torch.randn(4, 4, generator=generator), "key.weight": torch.randn(4, 4, generator=generator)}
    ported = {"q.weight": original["key.weight"].clone(), "k.weight": original["query.weight"].clone()}  # swapped
    without_map = check_weights(original, ported)
    assert without_map.complete
    mapped = check_weights(original, ported, parse_rename_rules([["^query$", "q"], ["^key$", "k"]], "test"))
    assert not mapped.complete
    assert {source.ported for source in mapped.problems} == {"q.weight", "k.weight"}
    assert "the map points to query.weight" in sources_by_name(mapped)["q.weight"].detail


def test_json_document() -> None:
    report = check_weights({"a": torch.ones(2, 3)}, {"b": torch.ones(3, 2), "c": torch.zeros(5)})
    document = report_document(report)
    assert document["schema"] == "tracetui.weights/1"
    assert document["verdict"] == "incomplete"
    entries = {entry["name"]: entry for entry in document["ported"]}
    assert entries["b"]["how"] == "transposed" and entries["b"]["original"] == "a"
    assert entries["c"]["how"] == "missing" and entries["c"]["problem"] is True
    json.dumps(document)


# -- the command, on the demos and the port pairs --------------------------------------------


def run_weights(arguments: list[str], monkeypatch: pytest.MonkeyPatch, bug: str = "", variable: str = "TRACETUI_DEMO_BUG") -> int:
    monkeypatch.delenv("TRACETUI_DEMO_BUG", raising=False)
    monkeypatch.delenv("TRACETUI_PORT_BUG", raising=False)
    if bug:
        monkeypatch.setenv(variable, bug)
    return main(["weights", *arguments])


def test_command_finds_the_demos_unconverted_weight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scripts = [str(ROOT / "demos/gpt/original.py"), str(ROOT / "demos/gpt/ported.py")]
    assert run_weights(scripts, monkeypatch) == 0
    assert "complete: every ported tensor came from the original" in capsys.readouterr().out

    report = tmp_path / "weights.json"
    assert run_weights([*scripts, "--json", str(report)], monkeypatch, bug="unconverted_weight") == 1
    output = capsys.readouterr().out
    assert "model.layers.1.self_attn.o_proj.weight" in output and "missing" in output
    document = json.loads(report.read_text())
    missing = [entry["name"] for entry in document["ported"] if entry["how"] == "missing"]
    assert missing == ["model.layers.1.self_attn.o_proj.weight"]
    assert [entry["name"] for entry in document["unused_original"]] == ["transformer.h.1.attn.c_proj.weight"]
    slices = {entry["name"]: entry for entry in document["ported"] if entry["how"] == "slice"}
    assert slices["model.layers.2.self_attn.v_proj.weight"]["pieces"] == [
        {"original": "transformer.h.2.attn.c_attn.weight", "axis": "rows", "start": 128, "stop": 192, "transposed": False}
    ]


def test_command_on_transformers_gpt2_finds_transposes_and_an_untied_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    scripts = [
        str(ROOT / "tests/ports/nanogpt/original.py"),
        str(ROOT / "tests/ports/nanogpt/ported.py"),
        "--json",
        str(tmp_path / "w.json"),
    ]
    assert run_weights(scripts, monkeypatch, bug="lm_head_untied_unconverted", variable="TRACETUI_PORT_BUG") == 1
    entries = {entry["name"]: entry for entry in json.loads((tmp_path / "w.json").read_text())["ported"]}
    assert entries["transformer.h.0.attn.c_attn.weight"]["how"] == "transposed"
    assert entries["transformer.h.0.mlp.c_proj.weight"]["how"] == "transposed"
    assert entries["lm_head.weight"]["how"] == "missing"
    assert entries["transformer.wte.weight"]["how"] == "same"


def test_command_reads_state_dict_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import save_file

    original = {"w": torch.randn(4, 4)}
    save_file(original, tmp_path / "original.safetensors")
    torch.save({"state_dict": {"v": original["w"].t().contiguous()}}, tmp_path / "ported.pt")
    assert run_weights([str(tmp_path / "original.safetensors"), str(tmp_path / "ported.pt")], monkeypatch) == 0
    assert run_weights([str(tmp_path / "original.safetensors"), str(tmp_path / "nothing.pt")], monkeypatch) == 2


def test_without_a_map_a_layer_that_takes_another_tensor_than_the_others_is_flagged() -> None:
    generator = torch.Generator().manual_seed(4)
    original = {f"layer.{layer}.{part}.weight": torch.randn(4, 4, generator=generator) for layer in range(3) for part in ("query", "key")}
    ported = {
        f"blocks.{layer}.{part[0]}.weight": original[f"layer.{layer}.{part}.weight"].clone()
        for layer in range(3)
        for part in ("query", "key")
    }
    ported["blocks.2.q.weight"], ported["blocks.2.k.weight"] = ported["blocks.2.k.weight"], ported["blocks.2.q.weight"]
    report = check_weights(original, ported)
    assert report.complete  # every value came from the original …
    flagged = {source.ported: source.breaks_pattern for source in report.sources if source.breaks_pattern}
    assert flagged == {  # … but layer 2 swaps what the other layers agree on
        "blocks.2.q.weight": "the other layers take it from layer.#.query.weight",
        "blocks.2.k.weight": "the other layers take it from layer.#.key.weight",
    }
