"""The process-wide state a model script may change, kept per script.

torch's default dtype and device, grad mode and deterministic-algorithm flags, the torch,
numpy and ``random`` generators, and the working directory belong to the process, and a script
is free to set them (``torch.set_default_dtype(torch.float64)`` at the top of a research file is
common, and so is ``os.chdir`` to the folder that holds the checkpoint). So that one script's
settings never leak into the other's, nor into the notebook or test that called tracetui (whose
relative paths would then point elsewhere): each script is built from the same clean state, its
forward passes run under the state its import and ``build()`` left, and the caller gets its own
state back afterwards. The working directory has no clean value: each script starts in the caller's.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy
import torch

CPU = torch.device("cpu")


@dataclass(frozen=True)
class GlobalState:
    default_dtype: torch.dtype
    default_device: torch.device
    grad_enabled: bool
    deterministic: bool
    deterministic_warn_only: bool
    torch_generator: torch.Tensor
    numpy_generator: Any
    python_generator: Any
    working_directory: str | None  # None when the directory it was in has been removed

    @classmethod
    def capture(cls) -> GlobalState:
        return cls(
            default_dtype=torch.get_default_dtype(),
            default_device=default_device(),
            grad_enabled=torch.is_grad_enabled(),
            deterministic=torch.are_deterministic_algorithms_enabled(),
            deterministic_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
            torch_generator=torch.get_rng_state(),
            numpy_generator=numpy.random.get_state(),
            python_generator=random.getstate(),
            working_directory=current_working_directory(),
        )

    @classmethod
    def clean(cls) -> GlobalState:
        """What a fresh Python process has (the generators are seeded by each run anyway), in the current directory."""
        current = cls.capture()
        return replace(
            current, default_dtype=torch.float32, default_device=CPU, grad_enabled=True, deterministic=False, deterministic_warn_only=False
        )

    def apply(self) -> None:
        """Set only what differs from the current state: a setter run for nothing is not always
        free (calling ``use_deterministic_algorithms`` with the value it already had raised a
        streamed comparison's peak memory by 26 MiB, tests/test_bounded_memory.py)."""
        if torch.get_default_dtype() != self.default_dtype:
            torch.set_default_dtype(self.default_dtype)
        if default_device() != self.default_device:
            # None rather than "cpu": setting the CPU explicitly installs a mode on every call.
            torch.set_default_device(None if self.default_device == CPU else self.default_device)
        if torch.is_grad_enabled() != self.grad_enabled:
            torch.set_grad_enabled(self.grad_enabled)
        deterministic = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
        if deterministic != (self.deterministic, self.deterministic_warn_only):
            torch.use_deterministic_algorithms(self.deterministic, warn_only=self.deterministic_warn_only)
        torch.set_rng_state(self.torch_generator)
        numpy.random.set_state(self.numpy_generator)
        random.setstate(self.python_generator)
        if self.working_directory is not None and current_working_directory() != self.working_directory:
            with contextlib.suppress(FileNotFoundError):  # removed since: nowhere to go back to
                os.chdir(self.working_directory)


def current_working_directory() -> str | None:
    try:
        return os.getcwd()
    except FileNotFoundError:  # a script removed the directory it moved into
        return None


def default_device() -> torch.device:
    return torch.get_default_device() if hasattr(torch, "get_default_device") else CPU


@contextmanager
def script_state(state: GlobalState | None = None) -> Iterator[None]:
    """Run under ``state`` (the clean one when None); the caller's own comes back afterwards."""
    callers = GlobalState.capture()
    (state or GlobalState.clean()).apply()
    try:
        yield
    finally:
        callers.apply()
