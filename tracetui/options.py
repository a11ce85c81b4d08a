"""How to run the models: the options every recording takes, as one value.

The command line and the Python API's keywords each build a :class:`RunOptions` once; the
layers below (:mod:`tracetui.api`'s helpers, :mod:`tracetui.stream`) pass it on whole rather
than seven keywords one by one, and derive a variant with :func:`dataclasses.replace`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from tracetui.errors import UsageError
from tracetui.output_files import absolute_path
from tracetui.record import KeepPolicy, Progress
from tracetui.script import DEFAULT_SEED

Keep = Literal["full", "stats"]

# The seeds every generator tracetui seeds (random, numpy, torch) accepts: numpy's are the narrowest.
MIN_SEED, MAX_SEED = 0, 2**32 - 1


@dataclass(frozen=True)
class RunOptions:
    """How each model is run and recorded.

    ``rerun`` runs each model twice, to catch nondeterministic calls; ``seed`` and ``device``
    are set before build() and the forward pass; ``progress`` receives short messages during
    long recordings; ``keep``, ``only`` and ``spill`` choose what is kept of each tensor and
    where (see :class:`tracetui.record.KeepPolicy`).
    """

    rerun: bool = True
    seed: int = DEFAULT_SEED
    device: str = "cpu"
    progress: Progress | None = None
    keep: Keep = "full"
    only: str | None = None
    spill: Path | None = None

    def __post_init__(self) -> None:
        """Refuse a seed or a device no run can use, before any model is built."""
        if not MIN_SEED <= self.seed <= MAX_SEED:
            raise UsageError(f"seed {self.seed} is out of range: numpy's generator takes 0 to 2**32 - 1 ({MAX_SEED}).")
        check_device(self.device)

    @classmethod
    def from_arguments(cls, arguments: argparse.Namespace, progress: Progress | None = None) -> RunOptions:
        """The options a sub-command's parsed arguments give; those it does not take keep their defaults."""
        given = vars(arguments)
        defaults = cls()
        spill = given.get("spill")
        if spill is True:  # record's --spill is a flag: the trace's -o directory is where it spills
            spill = given["output"]
        return cls(
            rerun=not given["no_rerun"] if "no_rerun" in given else defaults.rerun,
            seed=given.get("seed", defaults.seed),
            device=given.get("device", defaults.device),
            progress=progress,
            keep=given.get("keep", defaults.keep),
            only=given.get("only", defaults.only),
            # Absolute: a script may change the working directory, and shards are written during its forward pass.
            spill=absolute_path(spill) if spill else None,
        )

    def keep_policy(self) -> KeepPolicy:
        """What a recording keeps, spilled to :attr:`spill`; an invalid ``only`` raises a UsageError here."""
        return KeepPolicy(values=self.keep, only=self.only, spill=self.spill)


def check_device(device: str) -> None:
    """A UsageError naming the fix for a device string torch does not know, the meta device
    (its tensors hold no values to compare) or a device this machine does not have."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"device {device!r} is not a device torch knows: use cpu, cuda, cuda:N or mps.") from None
    if parsed.type == "meta":
        raise UsageError("device 'meta' holds no values to compare: run the models on cpu or cuda.")
    try:
        torch.empty(1, device=parsed)
    except (RuntimeError, AssertionError) as error:  # torch builds without CUDA raise AssertionError
        available = "cpu" + (f", cuda:0 to cuda:{torch.cuda.device_count() - 1}" if torch.cuda.is_available() else "")
        raise UsageError(f"device {device!r} is not available on this machine ({error}); available here: {available}.") from None
