"""What files the model's code may touch: those inside one folder only.

smolagents' local executor already refuses builtins such as `open` (and imports outside the
allowed list, which config.imports vets); this module gives the agent a file function that
cannot leave its folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


class FileAccessError(PermissionError):
    """The model's code asked for a file outside its folder."""


def folder_open(root: Path, *, relative: bool = False) -> Callable[..., IO[Any]]:
    """An `open` for the model's code that only reaches files inside `root`.

    `relative`: `root` is the current directory, and files are opened by paths relative to it.
    """
    root = root.resolve()

    def open_in_folder(file: str, mode: str = "r", encoding: str | None = None) -> IO[Any]:
        if not isinstance(file, str) or not isinstance(mode, str):
            raise FileAccessError("open() takes a file name inside the agent's folder")
        target = (root / file).resolve()
        if target != root and root not in target.parents:
            raise FileAccessError(f"Access outside the agent's folder is not allowed: {file}")
        if not relative and any(flag in mode for flag in ("w", "a", "x", "+")):
            root.mkdir(parents=True, exist_ok=True)
        if relative:
            # A code worker may not be allowed to traverse the folder's parents: it opens from its cwd.
            target = Path(os.path.relpath(target, root))
        if "b" in mode:
            return open(target, mode)  # noqa: SIM115 - the caller closes it
        return open(target, mode, encoding=encoding or "utf-8")  # noqa: SIM115

    open_in_folder.__name__ = "open"
    return open_in_folder
