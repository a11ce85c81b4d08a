"""Comparisons for the interface tests, recorded once per session from small model scripts."""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

import tracetui
from tracetui.compare import Comparison
from tracetui.trace import Trace

HERE = Path(__file__).parent
MODELS = HERE / "models"
sys.path.insert(0, str(MODELS))


@pytest.fixture(scope="session")
def tiny_traces() -> tuple[Trace, Trace]:
    """The tiny GPT and its port, recorded once; sources shown as relative paths."""
    original = tracetui.record(MODELS / "original.py", rerun=False)
    ported = tracetui.record(MODELS / "ported.py", rerun=False)
    original.source = "models/original.py"
    ported.source = "models/ported.py"
    return original, ported


def compare_tiny(tiny_traces: tuple[Trace, Trace], **options: object) -> Comparison:
    return tracetui.compare(*tiny_traces, rename_map=MODELS / "map.toml", rerun=False, **options)  # type: ignore[arg-type]


@pytest.fixture
def make_comparison(tiny_traces: tuple[Trace, Trace]) -> Callable[..., Comparison]:
    """The tiny pair compared with other options."""
    return functools.partial(compare_tiny, tiny_traces)


@pytest.fixture(scope="session")
def fed_comparison() -> Comparison:
    """The tiny pair compared from its scripts, so with the fed run: every layer's attention
    (the planted scale bug is in each) is a culprit of its own."""
    comparison = tracetui.compare(MODELS / "original.py", MODELS / "ported.py", rename_map=MODELS / "map.toml", rerun=False)
    comparison.original.source = "models/original.py"
    comparison.ported.source = "models/ported.py"
    return comparison


@pytest.fixture(scope="session")
def comparison(tiny_traces: tuple[Trace, Trace]) -> Comparison:
    """One comparison that every interface test shares: a comparison never changes (a new
    tolerance or pairing gives a new one), so no test can leave it different for the next."""
    return compare_tiny(tiny_traces)


@pytest.fixture(scope="session")
def zoo_traces() -> tuple[Trace, Trace]:
    from zoo import build_pair

    original, ported = build_pair()
    return tracetui.record(original, rerun=False), tracetui.record(ported, rerun=False)


@pytest.fixture(scope="session")
def nesting_comparison() -> Comparison:
    """A port nested one level deeper than its original, with one-sided calls on both sides."""
    from nesting import RENAME_MAP, build_pair

    original, ported = build_pair()
    traces = tracetui.record(original, rerun=False), tracetui.record(ported, rerun=False)
    return tracetui.compare(*traces, rename_map=RENAME_MAP, infer=False, rerun=False)


@pytest.fixture
def zoo_comparison(zoo_traces: tuple[Trace, Trace]) -> Comparison:
    return tracetui.compare(*zoo_traces, rerun=False)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests (the pilot tests) in a fresh event loop, without a plugin."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(pyfuncitem.obj(**arguments))
    return True


async def settle_pilot(pilot: Pilot) -> None:
    """Let messages, the detail pane's (deferred) worker and the repaint finish."""
    from tracetui.tui.detail import DetailPane

    await pilot.pause()
    detail = pilot.app.query_one(DetailPane)
    for _ in range(200):
        if not detail.busy:
            break
        await pilot.pause(0.02)
        await pilot.app.workers.wait_for_complete()
    await pilot.pause()


@pytest.fixture
def settle() -> Callable[[Pilot], Awaitable[None]]:
    return settle_pilot
