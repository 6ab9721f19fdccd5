"""SLURM batch scripts for multi-node embedding and training.

:func:`train_script` runs ``ecomodal train ...`` under ``srun`` with one task per GPU; Lightning
detects SLURM from the environment (``SLURM_NTASKS``, ``SLURM_PROCID``, ...) and sets up DDP
itself, given ``--devices`` = GPUs per node and ``--num-nodes`` = nodes. :func:`embed_script` runs
one ``ecomodal embed`` task per GPU, each on its own shard (``--shard $SLURM_PROCID/$SLURM_NTASKS``),
then merges the shards in a step that runs only once every shard has succeeded.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ecomodal.errors import InvalidArgumentError

_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class SlurmResources:
    """What a job asks SLURM for (the ``#SBATCH`` lines)."""

    nodes: int = 1
    gpus_per_node: int = 1
    time: str = "12:00:00"
    partition: str | None = None
    account: str | None = None
    cpus_per_task: int = 8
    mem: str | None = None
    job_name: str = "ecomodal"
    output: str = "%x-%j.out"

    def check(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.nodes < 1:
            raise InvalidArgumentError(f"--nodes must be at least 1; got {self.nodes}.")
        if self.gpus_per_node < 1:
            raise InvalidArgumentError(
                f"--gpus-per-node must be at least 1; got {self.gpus_per_node}."
            )
        if self.cpus_per_task < 1:
            raise InvalidArgumentError(
                f"--cpus-per-task must be at least 1; got {self.cpus_per_task}."
            )
        if not _TIME.match(self.time):
            raise InvalidArgumentError(
                f"--time {self.time!r} is not a SLURM time; expected e.g. 12:00:00 or 2-00:00:00."
            )
        for option, value in (
            ("--partition", self.partition),
            ("--account", self.account),
            ("--job-name", self.job_name),
        ):
            if value is not None and not _NAME.match(value):
                raise InvalidArgumentError(
                    f"{option} {value!r} may hold only letters, digits, '_.-'."
                )
        if self.mem is not None and not re.match(r"^\d+[KMGT]?$", self.mem):
            raise InvalidArgumentError(
                f"--mem {self.mem!r} is not a SLURM size; expected e.g. 64G."
            )

    def sbatch_lines(self) -> list[str]:
        """``#SBATCH`` lines: one task per GPU on every node."""
        self.check()
        lines = [
            f"#SBATCH --job-name={self.job_name}",
            f"#SBATCH --nodes={self.nodes}",
            f"#SBATCH --ntasks-per-node={self.gpus_per_node}",
            f"#SBATCH --gpus-per-node={self.gpus_per_node}",
            f"#SBATCH --cpus-per-task={self.cpus_per_task}",
            f"#SBATCH --time={self.time}",
            f"#SBATCH --output={self.output}",
        ]
        if self.partition:
            lines.append(f"#SBATCH --partition={self.partition}")
        if self.account:
            lines.append(f"#SBATCH --account={self.account}")
        if self.mem:
            lines.append(f"#SBATCH --mem={self.mem}")
        return lines


def _script(resources: SlurmResources, setup: Sequence[str], body: Sequence[str]) -> str:
    lines = [
        "#!/bin/bash",
        *resources.sbatch_lines(),
        "",
        "# Written by `ecomodal slurm`; submit with: sbatch THIS_FILE",
        "set -euo pipefail",
        *setup,
        "",
        *body,
    ]
    return "\n".join(lines) + "\n"


def _option_value(args: Sequence[str], option: str) -> str | None:
    """The value of ``option`` in ``args`` (``--opt VALUE`` or ``--opt=VALUE``), else None."""
    for index, arg in enumerate(args):
        if arg == option and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def train_script(
    train_args: Sequence[str],
    resources: SlurmResources,
    *,
    setup: Sequence[str] = (),
    ecomodal: str = "ecomodal",
) -> str:
    """An sbatch script running ``ecomodal train TRAIN_ARGS`` on ``resources.nodes`` nodes with
    ``resources.gpus_per_node`` GPUs each (one srun task per GPU, DDP set up by Lightning).

    ``train_args`` start with the trainer (e.g. ``["prom3e", "--data", "t.parquet", "--out",
    "runs/a"]``); ``--accelerator gpu --devices G --num-nodes N --strategy ddp`` are added, and a
    value already given for them must agree. ``setup`` lines (``module load ...``, ``source
    .venv/bin/activate``) run before.
    """
    if not train_args or train_args[0].startswith("-"):
        raise InvalidArgumentError(
            "The training command must start with the trainer, e.g. `prom3e --data ...`."
        )
    wanted = {
        "--accelerator": "gpu",
        "--devices": str(resources.gpus_per_node),
        "--num-nodes": str(resources.nodes),
        "--strategy": "ddp",
    }
    args = list(train_args)
    for option, value in wanted.items():
        given = _option_value(args, option)
        if given is None:
            args += [option, value]
        elif given != value:
            raise InvalidArgumentError(
                f"The training command sets {option} {given}, but the job needs {option} {value} "
                f"(from --nodes/--gpus-per-node); drop it from the command."
            )
    command = shlex.join([ecomodal, "train", *args])
    body = [
        "# Lightning reads SLURM_NTASKS / SLURM_PROCID / SLURM_LOCALID and the node list itself.",
        'export MASTER_PORT="${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}"',
        f"srun {command}",
    ]
    return _script(resources, setup, body)


# A task that sees every GPU of its node keeps only its own (the SLURM_LOCALID-th); a task that
# SLURM already bound to one GPU keeps it.
_PIN_GPU = (
    'IFS=, read -r -a gpus <<< "${CUDA_VISIBLE_DEVICES:-}"; '
    'if [ "${#gpus[@]}" -gt 1 ]; then export CUDA_VISIBLE_DEVICES="${gpus[$SLURM_LOCALID]}"; fi; '
    "exec "
)


def embed_script(
    embed_args: Sequence[str],
    out: str | Path,
    resources: SlurmResources,
    *,
    setup: Sequence[str] = (),
    ecomodal: str = "ecomodal",
) -> str:
    """An sbatch script embedding in ``nodes * gpus_per_node`` shards, one srun task per GPU
    (``ecomodal embed EMBED_ARGS --shard $SLURM_PROCID/$SLURM_NTASKS``), then merging the shards
    of ``out`` into ``out`` (``ecomodal embed merge``) once all of them have succeeded.

    ``embed_args`` are the options of ``ecomodal embed`` (``--records``, ``--modalities``,
    ``--out`` = ``out``, ...) without ``--shard``; ``--device cuda`` is added unless a device is
    given, and each task keeps only its own GPU (``CUDA_VISIBLE_DEVICES``, by ``SLURM_LOCALID``).
    """
    if _option_value(embed_args, "--shard") is not None:
        raise InvalidArgumentError(
            "Leave --shard out of the embed command: the job sets it per task."
        )
    given_out = _option_value(embed_args, "--out")
    if given_out is None or Path(given_out) != Path(out):
        raise InvalidArgumentError(
            f"The embed command must write --out {out}; it has {given_out!r}."
        )
    shards = resources.nodes * resources.gpus_per_node
    out = Path(out)
    args = list(embed_args)
    if _option_value(args, "--device") is None:
        args += ["--device", "cuda"]
    # Each task expands its own rank: the variables are quoted for the task's shell, not this one.
    task = (
        _PIN_GPU
        + shlex.join([ecomodal, "embed", *args])
        + ' --shard "${SLURM_PROCID}/${SLURM_NTASKS}"'
    )
    pattern = (
        shlex.quote(str(out.with_name(out.stem)))
        + f".shard-*-of-{shards:05d}"
        + shlex.quote(out.suffix or ".parquet")
    )
    merge = shlex.join([ecomodal, "embed", "merge"]) + f" {pattern} --out {shlex.quote(str(out))}"
    body = [
        f"# {shards} shards, one per task; a killed job resumes where it stopped when resubmitted.",
        f"srun bash -c {shlex.quote(task)}",
        "",
        "# Runs only after every shard succeeded (set -e): join them into one table.",
        f"srun --nodes=1 --ntasks=1 {merge}",
    ]
    return _script(resources, setup, body)
