"""Data files that ship inside installed packages (weights, rasters, shapefiles), found without
importing the package (some import heavy or missing dependencies)."""

from __future__ import annotations

from importlib import util
from pathlib import Path

from ecomodal.errors import MissingDependencyError


def package_dir(module: str, install_hint: str) -> Path:
    """The folder of an installed package; ``install_hint`` says how to install it."""
    spec = util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"The '{module}' package is not installed: {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def package_file(module: str, *parts: str, install_hint: str, pattern: bool = False) -> Path:
    """A file inside an installed package: ``parts`` is its relative path (with ``pattern=True``,
    the last part is a glob and the first match in sorted order is returned)."""
    folder = package_dir(module, install_hint)
    if pattern:
        found = sorted(folder.joinpath(*parts[:-1]).glob(parts[-1]))
        if not found:
            raise FileNotFoundError(f"The '{module}' package has no {'/'.join(parts)} file.")
        return found[0]
    path = folder.joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"The '{module}' package has no data file {path}.")
    return path
