"""Checks shared by the training tests: identical weights, and a run killed mid-way that resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def assert_killed_run_resumes_exactly(
    args_for: Callable[[Path], list[str]], tmp_path: Path
) -> None:
    """Run ``args_for(out)`` straight through; run it again, SIGKILL it once its first checkpoint
    exists, rerun it; the resumed run ends with the straight run's weights."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight = subprocess.run(args_for(tmp_path / "straight"), env=env, capture_output=True)
    assert straight.returncode == 0, straight.stderr.decode()[-2000:]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        args_for(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpt = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists()
    assert not list(killed.rglob("*.tmp"))  # nothing half-written survives as a checkpoint
    resumed = subprocess.run(args_for(killed), env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert_same_weights(tmp_path / "straight" / "last", killed / "last")
