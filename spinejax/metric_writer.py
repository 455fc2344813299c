"""Where a run's numbers go: a console line, WORKDIR/metrics.jsonl and TensorBoard event files.

Only process 0 writes (every process computes the same replicated metrics). On resume, lines of
metrics.jsonl past the restored step are dropped: they came from the part of the killed run that is
about to be redone.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path


class MetricWriter:
    def __init__(self, workdir, is_writer: bool, resume_step: int = 0):
        self.is_writer = is_writer
        self.path = Path(workdir) / "metrics.jsonl"
        self._tensorboard = None
        if not is_writer:
            return
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        from tensorboardX import SummaryWriter  # imported here: only the writing process needs it
        self._tensorboard = SummaryWriter(str(Path(workdir) / "tensorboard"), flush_secs=30)

    def write(self, step: int, metrics: dict, kind: str) -> None:
        """Records `metrics` (floats) of `kind` ('train' or 'eval') at `step`."""
        if not self.is_writer:
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else str(v)) for k, v in metrics.items()}
        with self.path.open("a") as f:
            f.write(json.dumps({"step": int(step), "kind": kind, "time": round(time.time(), 3), **clean}) + "\n")
        for name, value in clean.items():
            if isinstance(value, float):
                self._tensorboard.add_scalar(f"{kind}/{name}", value, int(step))

    def console(self, text: str) -> None:
        if self.is_writer:
            print(text, flush=True)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
