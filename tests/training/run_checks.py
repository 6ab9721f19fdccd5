"""Checks shared by the training tests: identical weights, and a run killed mid-way that resumes."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file

from ecomodal.training.callbacks import load_resume_state


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def metric_rows(run: Path) -> list[tuple[str, str, str]]:
    """(epoch, step, train/loss) of every row of a run's ``metrics.csv``."""
    with (run / "metrics.csv").open(newline="") as handle:
        return [(r["epoch"], r["step"], r.get("train/loss", "")) for r in csv.DictReader(handle)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def run_to_end(args: list[str]) -> str:
    """Run the command ``args`` to a successful end; returns its stderr (the log)."""
    finished = subprocess.run(args, env=_env(), capture_output=True)
    log = finished.stderr.decode()
    assert finished.returncode == 0, log[-2000:]
    return log


def kill_after_first_epoch(args: list[str], ckpt: Path, epochs: int) -> int:
    """Start the command ``args`` and SIGKILL it as soon as its resume state ``ckpt`` exists (the
    first epoch has finished); returns the number of epochs that state counts as done."""
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed mid-run, not finished
    done = int(load_resume_state(ckpt)["epoch"]) + 1
    assert 1 <= done < epochs
    assert not list(ckpt.parent.parent.rglob("*.tmp"))  # nothing half-written survives
    return done


def assert_killed_run_resumes_exactly(
    args_for: Callable[[Path], list[str]], tmp_path: Path, epochs: int
) -> None:
    """Run ``args_for(out)`` (``epochs`` epochs) straight through; run it again and SIGKILL it as
    soon as its first epoch has finished (its resume state exists); rerun it: the rerun says it
    resumes at the next epoch, ends with the straight run's weights, and ``metrics.csv`` holds
    each epoch's rows once, as the straight run's."""
    run_to_end(args_for(tmp_path / "straight"))
    killed = tmp_path / "killed"
    done = kill_after_first_epoch(args_for(killed), killed / "checkpoints" / "last.ckpt", epochs)
    log = run_to_end(args_for(killed))
    assert f"resuming from epoch {done} " in log, log[-2000:]
    assert_same_weights(tmp_path / "straight" / "last", killed / "last")
    assert_same_weights(tmp_path / "straight" / "best", killed / "best")
    rows = metric_rows(killed)
    assert rows == metric_rows(tmp_path / "straight")
    assert sorted({int(epoch) for epoch, _, _ in rows}) == list(range(epochs))
