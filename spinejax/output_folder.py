"""An output folder spinejax owns: written whole or not at all, never over the user's files, one run at a time.

A stage writes into `<out>.partial/` and, when everything is there, swaps it into place as `<out>/`. The
folder then holds `.spinejax-output.json`, the list of the files the stage wrote. Rules:
- `<out>` may be absent, an empty folder, or a folder this stage wrote whose files are all its own. A
  non-empty folder without the marker, a folder of another stage, or one holding a file the stage did not
  write (a note the user put there) is refused before any work: spinejax never deletes or overwrites a file
  it did not write. A later spinejax step that adds a file to the folder (the synthetic truth check to the
  eligibility folder) records it with `add_file`, so a rebuild may replace it.
- `<out>.partial/` holds the same kind of marker (`.spinejax-partial`) from the moment it is made; a folder
  of that name without it is the user's, and is refused too.
- `<out>.lock` (next to `<out>`, kept) is held with an exclusive lock for the whole run; a second run into
  the same folder is refused at once with a clear message. The lock goes when the process ends, however it
  ends (kill -9 included), so a killed run never blocks the next.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

from spinejax.errors import InputError

MARKER = ".spinejax-output.json"
PARTIAL_MARKER = ".spinejax-partial"


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink())


class OutputFolder:
    """Use as a context manager around a stage's whole run: `with OutputFolder(out, 'records') as f:`,
    write into `f.partial`, then `f.commit()`."""

    def __init__(self, out: Path, stage: str):
        self.out = Path(out).resolve()  # a symlinked --out: write where it points, and keep the link
        self.stage = stage
        self.partial = self.out.with_name(self.out.name + ".partial")
        self._lock_file = None

    def __enter__(self) -> OutputFolder:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.out.with_name(self.out.name + ".lock")
        self._lock_file = open(lock_path, "a+")  # noqa: SIM115 - held for the whole run
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise InputError(f"{self.out}: another {self.stage} run is writing this folder (it holds "
                             f"{lock_path.name}); wait for it to finish or choose another --out") from None
        try:
            self._check_owner(self.out)
            if self.partial.exists() and not any((self.partial / m).is_file() for m in (PARTIAL_MARKER, MARKER)):
                raise InputError(f"{self.partial} exists and was not made by spinejax; move it away or choose "
                                 "another --out")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def _check_owner(self, folder: Path) -> dict | None:
        """The marker of `folder` (None when absent or empty); refuses a folder not of this stage."""
        if not folder.exists():
            return None
        if not folder.is_dir():
            raise InputError(f"{folder} is a file, not a folder; choose another --out")
        if not any(folder.iterdir()):
            return None
        marker = folder / MARKER
        if not marker.is_file():
            older = any((folder / name).is_file() for name in ("manifest.json", "summary.json"))
            raise InputError(f"{folder} is not empty and was not written by spinejax"
                             + (" (or by an older spinejax, before output folders were marked: delete it yourself "
                                "to rebuild)" if older else "")
                             + "; spinejax never deletes or overwrites files it did not write: choose another --out")
        written = json.loads(marker.read_text())
        if written.get("stage") != self.stage:
            raise InputError(f"{folder} holds the output of spinejax's {written.get('stage')} stage, not "
                             f"{self.stage}; choose another --out")
        return written

    def check_replaceable(self, folder: Path) -> None:
        """Refuses (InputError) a folder that this stage may not replace (module docstring)."""
        written = self._check_owner(folder)
        if written is None:
            return
        foreign = sorted(set(_listing(folder)) - set(written.get("files", [])) - {MARKER})
        if foreign:
            raise InputError(f"{folder} holds {len(foreign)} file(s) spinejax did not write (first: {foreign[0]}); "
                             "move them away before rebuilding: spinejax never deletes files it did not write")

    def start(self, stamp: dict) -> bool:
        """Makes (or keeps) the partial folder for a run described by `stamp`, after checking that `out` may
        be replaced (an up-to-date folder is returned before this, so it is never refused); True when a
        partial folder of the same `stamp` was kept (an interrupted run to resume), False when started afresh."""
        self.check_replaceable(self.out)
        stamp_path = self.partial / PARTIAL_MARKER
        text = json.dumps(stamp, sort_keys=True)
        if stamp_path.is_file() and stamp_path.read_text() == text:
            for path in self.partial.iterdir():  # keep the per-input cache; shards and tables are rewritten
                if path.name not in (PARTIAL_MARKER, ".cache"):
                    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            return True
        if self.partial.exists():  # ours (checked on entry), from a run with other settings
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True)
        stamp_path.write_text(text)
        return False

    def commit(self) -> None:
        """Lists what the partial folder holds as this stage's files and swaps it into place."""
        self.check_replaceable(self.out)  # before anything changes: a refusal leaves a resumable partial folder
        old = self.out.with_name(self.out.name + ".replaced")
        if old.exists():  # left by a run killed between the two renames below
            self.check_replaceable(old)
            shutil.rmtree(old)
        files = [f for f in _listing(self.partial) if f not in (MARKER, PARTIAL_MARKER)]
        (self.partial / MARKER).write_text(json.dumps({"stage": self.stage, "files": files}, indent=0))
        (self.partial / PARTIAL_MARKER).unlink()
        if self.out.exists():
            os.replace(self.out, old)
        os.replace(self.partial, self.out)
        if old.exists():
            shutil.rmtree(old)


def add_file(folder: Path, name: str, data: bytes) -> None:
    """Writes `data` to folder/name, in a spinejax output folder another step wrote, and lists it there as
    spinejax's. Refuses a folder without the marker and a file of that name that spinejax did not write."""
    folder = Path(folder)
    marker = folder / MARKER
    if not marker.is_file():
        raise InputError(f"{folder} is not a spinejax output folder; cannot add {name} to it")
    written = json.loads(marker.read_text())
    if (folder / name).exists() and name not in written["files"]:
        raise InputError(f"{folder}/{name} exists and was not written by spinejax; move it away")
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, folder / name)
    if name not in written["files"]:
        written["files"] = sorted([*written["files"], name])
        marker.write_text(json.dumps(written, indent=0))
