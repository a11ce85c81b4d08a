"""How fast the interface is on a 20,000-row comparison.

Records a real model with ~20,000 module calls (2,500 small residual blocks of Linear layers,
8 calls each) on both sides, the port with one wrong bias in block 1,250, compares them with
tracetui (``rerun=False``), then drives the app with ``app.run_test()``:

- time to first screen: from creating the app to the first frame with the list drawn;
- time per key: from sending the key to the repainted screen (the key's handling, the
  messages it causes and the redraw of the list), for j, k, pagedown, G, g, n, f, enter, and
  each keystroke of a ``/`` filter.

Run it with ``python bench/bench_tui.py`` (about half a minute, most of it recording).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import os
import statistics
import time

import torch
import torch.nn as nn
from textual.pilot import Pilot
from textual.screen import Screen

import tracetui
from tracetui.tui import TracetuiApp
from tracetui.tui.call_list import CallList
from tracetui.tui.detail import DetailPane

FIRST_SCREEN_TARGET = 1.5  # seconds
KEY_TARGET = 0.050  # seconds
CALLS_PER_BLOCK = 8
WIDTH = 8


class GatedBlock(nn.Module):
    """Eight module calls: the block, norm, up, act, down, gate (a Sequential) and its two parts."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(WIDTH)
        self.up = nn.Linear(WIDTH, 2 * WIDTH)
        self.act = nn.GELU()
        self.down = nn.Linear(2 * WIDTH, WIDTH)
        self.gate = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.Sigmoid())

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        update = self.down(self.act(self.up(self.norm(hidden_states))))
        return hidden_states + 0.1 * update * self.gate(hidden_states)


class DeepModel(nn.Module):
    def __init__(self, blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([GatedBlock() for _ in range(blocks)])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            hidden_states = block(hidden_states)
        return hidden_states


def build_comparison(rows: int) -> tracetui.Comparison:
    blocks = max(1, (rows - 1) // CALLS_PER_BLOCK)
    torch.manual_seed(0)
    original = DeepModel(blocks).eval()
    ported = copy.deepcopy(original)
    with torch.no_grad():
        ported.blocks[blocks // 2].down.bias.add_(0.1)  # the planted conversion bug
    inputs = torch.randn(1, 4, WIDTH)
    return tracetui.compare((original, inputs), (ported, inputs.clone()), rerun=False)


def row_index_named(comparison: tracetui.Comparison, name: str) -> int:
    return next(row.index for row in comparison.rows if row.original is not None and row.original.name == name)


class FrameLog:
    """When the screen was repainted, and whether the call list or the detail pane drew lines.

    ``pilot.press`` waits in 20 ms steps until the process is idle, so its own duration says
    little; the latency of a key is taken from the frames instead: from sending the key to the
    end of the last frame that redrew the list (or the first frame, when the list did not
    change: a dialog opening, the filter bar appearing).
    """

    def __init__(self) -> None:
        self.frames: list[tuple[float, int, int]] = []  # (end time, list lines, detail lines)
        self.list_lines = 0
        self.detail_lines = 0

    def install(self) -> None:
        log = self
        self._originals = (Screen._compositor_refresh, CallList.render_line, DetailPane.render_line)
        refresh, list_line, detail_line = self._originals

        def compositor_refresh(screen: Screen) -> None:
            list_before, detail_before = log.list_lines, log.detail_lines
            refresh(screen)
            log.frames.append((time.perf_counter(), log.list_lines - list_before, log.detail_lines - detail_before))

        def render_list_line(widget: CallList, y: int):  # noqa: ANN202
            log.list_lines += 1
            return list_line(widget, y)

        def render_detail_line(widget: DetailPane, y: int):  # noqa: ANN202
            log.detail_lines += 1
            return detail_line(widget, y)

        Screen._compositor_refresh = compositor_refresh  # type: ignore[method-assign]
        CallList.render_line = render_list_line  # type: ignore[method-assign]
        DetailPane.render_line = render_detail_line  # type: ignore[method-assign]

    def uninstall(self) -> None:
        Screen._compositor_refresh, CallList.render_line, DetailPane.render_line = self._originals  # type: ignore[method-assign]

    def latencies(self, since: float) -> tuple[float | None, float | None, int]:
        """(key → repaint, key → detail pane filled, list lines redrawn) for frames after ``since``."""
        frames = [frame for frame in self.frames if frame[0] > since]
        if not frames:
            return None, None, 0
        list_frames = [frame for frame in frames if frame[1]]
        repaint = (list_frames[-1] if list_frames else frames[0])[0] - since
        detail_frames = [frame for frame in frames if frame[2]]
        detail = detail_frames[-1][0] - since if detail_frames else None
        return repaint, detail, sum(frame[1] for frame in frames)


async def settle(pilot: Pilot) -> None:
    """Until the detail pane has described the selected row and nothing else is pending."""
    detail = pilot.app.query_one(DetailPane)
    await pilot.pause()
    for _ in range(500):
        if not detail.busy:
            break
        await pilot.pause(0.01)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def measure(comparison: tracetui.Comparison, size: tuple[int, int], repeats: int) -> tuple[float, dict[str, list[tuple]]]:
    log = FrameLog()
    log.install()
    results: dict[str, list[tuple]] = {}
    try:
        start = time.perf_counter()
        app = TracetuiApp(comparison, freeze_garbage_collector=True)  # as open_comparison does
        async with app.run_test(size=size) as pilot:
            first_list_frame = next(frame for frame in log.frames if frame[1])
            first_screen = first_list_frame[0] - start
            await settle(pilot)

            async def timed(label: str, *keys: str) -> None:
                for key in keys:
                    began = time.perf_counter()
                    await pilot.press(key)
                    await settle(pilot)
                    results.setdefault(label, []).append(log.latencies(began))

            for _ in range(repeats):
                for key in ("j", "k", "pagedown", "pageup", "G", "g", "n", "N", "f"):
                    await timed(key, key)
                # Fold the root (hides every other row) and unfold it.
                await timed("g", "g")
                await timed("enter (fold root)", "enter")
                await timed("enter (unfold root)", "enter")
                # Fold and unfold a block in the middle of the list.
                app.selected_row = row_index_named(comparison, f"blocks.{len(comparison.rows) // 3 // CALLS_PER_BLOCK}")
                await settle(pilot)
                await timed("enter (fold block)", "enter")
                await timed("enter (unfold block)", "enter")
                await timed("/ (open filter)", "slash")
                await timed("/ filter keystroke", *"blocks\\.1.*gate")
                await timed("/ filter enter", "enter")
                await timed("escape (clear filter)", "escape")
                await timed("x (only not matching)", "x")
                await timed("x (all rows)", "x")
            # t: re-classify every row under another tolerance (a dialog, then enter).
            for atol in ("0.5", "0.001"):
                await timed("t (open the dialog)", "t")
                await pilot.press(*atol)
                await timed("t … enter (re-classify)", "enter")
            for _ in range(repeats):
                await timed("? (open help)", "question_mark")
                await timed("escape (close help)", "escape")
                await timed("d (hide detail)", "d")
                await timed("d (show detail)", "d")
    finally:
        log.uninstall()
    return first_screen, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="module calls to record (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="times each navigation key is pressed (default: %(default)s)")
    parser.add_argument("--size", default="160x50", help="terminal size WIDTHxHEIGHT (default: %(default)s)")
    arguments = parser.parse_args()
    width, height = (int(part) for part in arguments.size.split("x"))

    began = time.perf_counter()
    gc.disable()  # recording 20,000 calls makes millions of objects; collecting them repeatedly doubles the time
    comparison = build_comparison(arguments.rows)
    gc.enable()
    built = time.perf_counter() - began
    print(
        f"comparison: {len(comparison.rows):,} rows, culprit {comparison.culprit.label if comparison.culprit else None} "
        f"(recorded and compared in {built:.1f} s, not part of the figures)"
    )

    first_screen, results = asyncio.run(measure(comparison, (width, height), arguments.repeats))
    report(comparison, (width, height), first_screen, results)


def report(comparison: tracetui.Comparison, size: tuple[int, int], first_screen: float, results: dict[str, list[tuple]]) -> None:
    width, height = size
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"load average {load} on {os.cpu_count()} cores (other work on the machine slows every figure)")
    verdict = "ok" if first_screen < FIRST_SCREEN_TARGET else "SLOW"
    print(f"\nterminal {width}x{height}, {len(comparison.rows):,} rows")
    print(f"{'time to first screen':<26} {first_screen * 1000:8.0f} ms   target < {FIRST_SCREEN_TARGET * 1000:.0f} ms   {verdict}")
    print(f"\n{'key':<26} {'repaint':>17}   target   {'detail pane filled':>18}  presses  lines")
    print(f"{'':<26} {'median':>8} {'max':>8}            {'median':>8} {'max':>8}")
    slowest = 0.0
    reclassify = "t … enter (re-classify)"
    for label, values in results.items():
        repaints = [value[0] for value in values if value[0] is not None] or [0.0]
        details = [value[1] for value in values if value[1] is not None]
        lines = statistics.median(value[2] for value in values)
        median, worst = statistics.median(repaints), max(repaints)
        if label != reclassify:
            slowest = max(slowest, worst)
        flag = "ok" if worst < KEY_TARGET else "SLOW"
        detail = f"{statistics.median(details) * 1000:6.1f}ms {max(details) * 1000:6.1f}ms" if details else f"{'—':>8} {'—':>8}"
        repaint = f"{median * 1000:6.1f}ms {worst * 1000:6.1f}ms"
        print(f"{label:<26} {repaint}   < {KEY_TARGET * 1000:.0f} ms  {detail}  {len(values):>5}  {lines:>5.0f}  {flag}")
    print(f"\nslowest repaint of a key: {slowest * 1000:.1f} ms (target < {KEY_TARGET * 1000:.0f} ms)")
    print(
        f"{reclassify}: from enter to the frame that shows every row's new status (without rtol the rows are "
        "re-classified from figures gathered once, before the dialog closes; with an rtol, in a worker thread)."
    )
    print(
        "detail pane filled: the pane is described after the cursor rests "
        f"{DetailPane.SETTLE_SECONDS * 1000:.0f} ms, in a worker thread; not part of a key's repaint."
    )


if __name__ == "__main__":
    main()
