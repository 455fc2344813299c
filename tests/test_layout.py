"""The folder layout keeps its promises: the pipeline never imports the synthetic cohort's code (so nothing can
read the hidden truth), command-line modules stay thin and unimported, and the installed package (spinejax
alone) imports nothing that only a checkout has."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[1]
PIPELINE = ("spinejax", "spinejax/scans", "spinejax/cohort", "data_prep/records", "data_prep/normal",
            "data_prep/reports_text", "analysis")
CHECKOUT_ONLY = ("data_prep", "analysis", "configs")  # top-level folders that `pip install .` does not install
CLIS = {"data_prep.build_records", "data_prep.eligibility", "data_prep.synthesize", "data_prep.report_features",
        "spinejax.main",
        "spinejax.predict", "spinejax.export", "spinejax.native.build", "spinejax.train_benchmark"}


def _modules(folder: str) -> list[str]:
    return [".".join(p.relative_to(REPO).with_suffix("").parts) for p in sorted((REPO / folder).glob("*.py"))
            if p.name != "__init__.py"]


def test_no_pipeline_module_loads_the_phantom():
    # The eligibility and report benchmarks draw synthetic cohorts on purpose (tools of the test bench); the
    # PyTorch peer needs the optional 'peer' extra, which a plain install does not have.
    modules = [m for folder in PIPELINE for m in _modules(folder)
               if m not in ("data_prep.normal.benchmark", "data_prep.normal.robustness",
                            "data_prep.reports_text.benchmark", "spinejax.torch_peer")]
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


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_the_installed_package_needs_no_checkout_folder():
    paths = sorted((REPO / "spinejax").rglob("*.py"))
    assert len(paths) > 30
    for path in paths:
        outside = {n for n in _imported(path) if n.split(".")[0] in CHECKOUT_ONLY}
        assert not outside, f"{path.relative_to(REPO)} imports {sorted(outside)}, which pip install . does not install"


def _third_party(folders: tuple[str, ...]) -> set[str]:
    names = set()
    for folder in folders:
        for path in (REPO / folder).rglob("*.py"):
            names |= {n.split(".")[0] for n in _imported(path)}
    local = {"spinejax", *CHECKOUT_ONLY, "tests"}
    return {n for n in names if n not in local and n not in sys.stdlib_module_names}


def test_pyproject_lists_what_the_code_imports():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    distribution = {"flax": "flax", "jax": "jax", "optax": "optax", "orbax": "orbax-checkpoint", "grain": "grain",
                    "numpy": "numpy", "scipy": "scipy", "pandas": "pandas", "pydicom": "pydicom", "nibabel": "nibabel",
                    "ml_collections": "ml-collections", "yaml": "pyyaml", "matplotlib": "matplotlib", "tqdm": "tqdm",
                    "absl": "absl-py", "tensorboardX": "tensorboardX", "torch": "torch", "umap": "umap-learn",
                    "hdbscan": "hdbscan", "sklearn": "scikit-learn", "statsmodels": "statsmodels", "spacy": "spacy",
                    "array_record": "array-record", "apache_beam": "apache-beam"}
    pins = lambda key: {d.split("=")[0].split("[")[0] for d in key}
    installed = _third_party(("spinejax",)) - {"torch"}  # torch: the optional 'peer' extra
    assert {distribution[n] for n in installed} <= pins(project["dependencies"]), installed
    checkout = _third_party(("data_prep", "analysis", "configs")) - installed
    extras = project["optional-dependencies"]
    assert {distribution[n] for n in checkout} <= pins(extras["pipeline"]) | pins(extras["beam"]) | pins(
        project["dependencies"]), checkout
    declared = pins(project["dependencies"]) - {"pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg",
                                                "pylibjpeg-rle", "array-record"}
    assert declared <= {distribution[n] for n in installed}, f"declared but not imported: {declared}"


def test_the_lock_file_pins_the_whole_installed_tree_and_agrees_with_its_source():
    def pins(path: Path) -> dict[str, str]:
        found = {}
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if "==" in line:
                name, version = line.split("==", 1)
                found[name.strip().lower().replace("_", "-")] = version.strip()
        return found

    source, lock = pins(REPO / "requirements.in"), pins(REPO / "requirements.txt")
    assert len(source) > 30 and len(lock) > len(source)
    assert {n: v for n, v in source.items() if lock.get(n) != v} == {}, "regenerate requirements.txt (requirements.in)"
    # Every distribution the source's packages need, transitively (extras they do not ask for left out), is
    # pinned by the lock at the version installed.
    import importlib.metadata

    from packaging.requirements import Requirement

    norm = lambda name: name.lower().replace("_", "-").replace(".", "-")
    seen, todo, unpinned = set(), [(n, "") for n in source], {}
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        distribution = importlib.metadata.distribution(name)
        if lock.get(name) != distribution.version:
            unpinned[name] = distribution.version
        for text in distribution.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                todo += [(norm(requirement.name), e) for e in ("", *requirement.extras)]
    assert len(seen) > 100 and unpinned == {}, f"needed but not pinned as installed by requirements.txt: {unpinned}"
