"""Write files atomically: to a temporary name beside the target, then rename over it."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

from ecomodal.errors import OutputPathError

_COUNTER = itertools.count()


def check_output_path(
    path: str | os.PathLike[str], *, what: str = "Output", expected: str = "a file path"
) -> Path:
    """``path`` as a Path if a file can be written there, else an
    :class:`~ecomodal.errors.OutputPathError` naming ``path`` (``what`` says which output,
    ``expected`` what kind of file it should be): the path is an existing folder, a parent on the
    way is a file, or the folder it would go in is not writable. Nothing is created; call it
    before the heavy work starts."""
    target = Path(path)
    if target.is_dir():
        raise OutputPathError(
            f"{what} {target} is an existing folder; expected {expected} (a name inside it, "
            "or another path)."
        )
    parent = target.parent
    while not parent.exists():
        if parent.is_symlink():  # a dangling link: mkdir would fail on it
            raise OutputPathError(f"{what} {target} cannot be written: {parent} is a broken link.")
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(
            f"{what} {target} cannot be written: {parent} is a file, not a folder."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {target} cannot be written: folder {parent} is read-only.")
    return target


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it.

    A reader never sees a half-written file, and an existing file is replaced only once the new
    one is complete. A path that cannot be written (see :func:`check_output_path`) is an
    :class:`~ecomodal.errors.OutputPathError` naming ``path``, never the temporary file.
    """
    target = check_output_path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputPathError(
            f"Output {target} cannot be written: cannot create folder {target.parent} "
            f"({err.strerror or err})."
        ) from err
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{next(_COUNTER)}.tmp")
    try:
        yield tmp
        try:
            os.replace(tmp, target)
        except IsADirectoryError as err:  # a folder appeared at `path` meanwhile
            raise OutputPathError(
                f"Output {target} is an existing folder; expected a file path."
            ) from err
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
