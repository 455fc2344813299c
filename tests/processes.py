"""Running a command-line stage in a child process and killing it mid-way, as a preempted job would be."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).parents[1]


def signal_when(command: list[str], folder: Path, pattern: str, count: int, signal_number: int,
                patience_s: float = 120.0) -> int:
    """Starts `command`, sends it `signal_number` once `folder` holds `count` files matching `pattern`, and
    returns its exit code. Raises AssertionError when the command ends by itself first."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    give_up = time.monotonic() + patience_s  # a bound on waiting, not a timing assertion
    while time.monotonic() < give_up and len(list(folder.glob(pattern))) < count and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, f"{command[2]} finished before it could be signalled"
    process.send_signal(signal_number)
    return process.wait(timeout=patience_s)


def kill_when(command: list[str], folder: Path, pattern: str, count: int) -> None:
    """SIGKILL once `folder` holds `count` files matching `pattern`: a job killed outright."""
    signal_when(command, folder, pattern, count, signal.SIGKILL)


def stop_when(command: list[str], folder: Path, pattern: str, count: int) -> int:
    """SIGTERM (what a preempting scheduler sends) once `folder` holds `count` files matching `pattern`; the
    exit code once the command has ended by itself."""
    return signal_when(command, folder, pattern, count, signal.SIGTERM)


def run(command: list[str]) -> None:
    """Runs `command` to the end; a failure shows the end of its output."""
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise AssertionError(f"{' '.join(command[:3])} failed ({done.returncode}):\n{done.stdout[-3000:]}"
                             f"\n{done.stderr[-3000:]}")
