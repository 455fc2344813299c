"""The folder layout keeps its promises: the pipeline never imports the synthetic cohort's code (so nothing can
read the hidden truth), and command-line modules stay thin and unimported."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[1]
PIPELINE = ("data_prep/cohort", "data_prep/records", "data_prep/normal", "spinejax", "analysis")
CLIS = {"data_prep.build_records", "data_prep.eligibility", "data_prep.synthesize", "spinejax.main",
        "spinejax.predict", "spinejax.export"}


def _modules(folder: str) -> list[str]:
    return [".".join(p.relative_to(REPO).with_suffix("").parts) for p in sorted((REPO / folder).glob("*.py"))
            if p.name != "__init__.py"]


def test_no_pipeline_module_loads_the_phantom():
    # The eligibility benchmark draws synthetic cohorts on purpose (a tool of the test bench); the PyTorch peer
    # needs the optional 'peer' extra, which a plain install does not have.
    modules = [m for folder in PIPELINE for m in _modules(folder)
               if m not in ("data_prep.normal.benchmark", "spinejax.torch_peer")]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(k for k in sys.modules if k.startswith('data_prep.phantom')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", f"pipeline modules import the phantom: {done.stdout}"
    assert len(modules) > 30


def test_command_line_modules_are_imported_by_nothing():
    for path in [*REPO.glob("*/**/*.py"), *REPO.glob("tests/*.py")]:
        if ".venv" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = {f"{node.module}.{a.name}" for a in node.names} | {node.module}
            elif isinstance(node, ast.Import):
                names = {a.name for a in node.names}
            else:
                continue
            assert not names & CLIS, f"{path.relative_to(REPO)} imports a command-line module: {names & CLIS}"
