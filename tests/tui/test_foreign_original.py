"""The interface with a Flax original (issue 11): the same rows, keys and detail pane as for PyTorch."""

from __future__ import annotations

from pathlib import Path

import pytest

import tracetui
from tracetui.tui import TracetuiApp
from tracetui.tui.call_list import CallList
from tracetui.tui.detail import DetailPane

DEMO = Path(__file__).parents[2] / "demos" / "flax_gpt"


async def test_f_finds_the_planted_bug_of_a_port_of_a_flax_original(monkeypatch: pytest.MonkeyPatch, settle) -> None:
    monkeypatch.setenv("TRACETUI_DEMO_BUG", "kernel_not_transposed")
    comparison = tracetui.compare(DEMO / "original.py", DEMO / "ported.py", rename_map=DEMO / "map.toml", rerun=False)
    app = TracetuiApp(comparison)
    async with app.run_test(size=(160, 44)) as pilot:
        await pilot.press("f")
        await settle(pilot)
        culprit = comparison.rows[app.selected_row]
        assert culprit is comparison.culprit
        assert culprit.original is not None and culprit.original.name == "h_1.attn.out"
        line = app.query_one(CallList).line_text(app.selected_row)
        assert "CULPRIT" in line and "out (Dense)" in line and "o_proj (Linear)" in line
        detail = app.query_one(DetailPane).plain_text()
        assert "why: its inputs agree" in detail
        assert "model.layers.1.self_attn.o_proj" in detail
