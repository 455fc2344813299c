"""Every file under a folder, and the folders that could not be read: nothing under an input folder vanishes.

`Path.rglob` skips a folder it may not list (mode 000, another user's) without a word; an archive job run as
an ordinary user would then lose a whole study silently. Symlinks to files count as files; dangling ones
too, so that they end as failures; symlinks to folders are not followed (they could loop).
"""

from __future__ import annotations

import os
from pathlib import Path


def files_under(root: Path) -> tuple[list[Path], list[Path]]:
    """(files, folders that could not be listed), each sorted, under `root` (which may be absent)."""
    files, unreadable = [], []
    if not Path(root).is_dir():
        return files, unreadable
    for folder, names, file_names in os.walk(root, onerror=lambda error: unreadable.append(Path(error.filename))):
        here = Path(folder)
        for name in names:
            if (here / name).is_symlink() and not (here / name).exists():
                files.append(here / name)  # a dangling link os.walk lists as a folder name
        files.extend(here / name for name in file_names)
    return sorted(files), sorted(unreadable)


def printable(text: str) -> str:
    """`text` for one console line: control characters (a newline in a file name) escaped."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
