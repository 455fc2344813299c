"""The model bundle and the predict command: the same predictions as evaluate from the raw scans, refused when
tampered with, partial scans flagged, intervals that cover what they say."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from analysis import prediction_check
from spinejax import bundle, evaluate, predictor
from spinejax import workdir as workdir_format
from spinejax.errors import InputError
from spinejax.scans import spine_labels


@pytest.fixture(scope="module")
def exported(evaluated, tmp_path_factory):
    workdir, _ = evaluated
    out = tmp_path_factory.mktemp("bundle") / "lumbar-model"
    return bundle.export(workdir, out), out


def test_conformal_intervals_cover_what_they_say():
    # Exchangeable, heavy-tailed residuals; 300 calibration sets of 200. Split-conformal's coverage is exactly
    # ceil(201 * level) / 201 in expectation (the mean over sets has a standard error of about 0.001).
    rng = np.random.default_rng(0)
    for level in bundle.INTERVAL_LEVELS:
        covered = [np.mean(np.abs(rng.standard_t(3, 300) * 4) <= bundle.conformal_quantile(
            rng.standard_t(3, 200) * 4, level)) for _ in range(300)]
        assert abs(np.mean(covered) - np.ceil(201 * level) / 201) < 0.005, level
    assert bundle.conformal_quantile(np.ones(5), 0.9) == float("inf")  # too few to promise 90%


def test_predict_from_the_raw_scans_equals_evaluate(exported, evaluated, training_records, training_records_secret,
                                                   tmp_path):
    facts, model = exported
    workdir, metrics = evaluated
    assert facts["checkpoint_step"] == metrics["checkpoint_step"] and facts["region"] == "lumbar"
    key_file = tmp_path / "key"
    key_file.write_bytes(training_records_secret)
    cohort = training_records.parent / "cohort"
    check = tmp_path / "check"
    n = prediction_check.layout(cohort, training_records, training_records_secret, check)
    assert n == metrics["splits"]["test"]["all"]["n"]
    # The installed console command, run from another directory, in a fresh process.
    command = shutil.which("spinejax-predict", path=str(Path(sys.executable).parent))
    assert command, "spinejax-predict is not installed in this environment (./run.sh setup installs it)"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([command, f"--model={model}", f"--input={check / 'scans'}", f"--out={check / 'predicted'}"],
                          cwd=elsewhere, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = prediction_check.compare(workdir, training_records_secret, check)
    assert result["predicted"] == n and result["equal_to_evaluate"] == n, result
    table = pd.read_csv(check / "predicted" / "predictions.csv")
    assert (table["status"] == "ok").all()
    assert table["qc_picture"].map(lambda p: (check / "predicted" / p).is_file()).all()
    assert (check / "predicted" / "index.html").stat().st_size > 1000
    # About 33 test and 30 calibration people: a correct split-conformal 90% interval's coverage is
    # beta-binomial here, under 0.75 in about 1 draw in 20 (0.70 was seen with AVX2 kernels) and under 0.5 in
    # well under 1 in 1,000; intervals that ignore the calibration (no width, wrong centre) cover almost nobody.
    assert 0.5 <= result["interval_coverage"] <= 1.0
    assert 0 < result["interval_mean_width_years"] < 40


def test_a_tampered_or_foreign_bundle_is_refused(exported, tmp_path):
    _, model = exported
    changed = shutil.copytree(model, tmp_path / "changed")
    data = bytearray((changed / "params.npz").read_bytes())
    data[len(data) // 2] ^= 1
    (changed / "params.npz").write_bytes(bytes(data))
    with pytest.raises(InputError, match="params.npz fails its checksum"):
        bundle.load(changed)
    newer = shutil.copytree(model, tmp_path / "newer")
    facts = json.loads((newer / "bundle.json").read_text())
    bundle.write(newer, {k: v for k, v in facts.items() if k not in ("format_version", "label_convention")},
                 bundle.load(model).variables)
    assert bundle.load(newer).facts["checkpoint_step"] == facts["checkpoint_step"]  # re-sealed: accepted
    text = (newer / "bundle.json").read_text().replace('"format_version": 1', '"format_version": 99')
    (newer / "bundle.json").write_text(text)
    (newer / "SHA256SUMS").write_text("".join(f"{bundle._sha256(newer / n)}  {n}\n" for n in bundle.FILES))
    with pytest.raises(InputError, match="bundle format 99"):
        bundle.load(newer)
    with pytest.raises(InputError, match="not a spinejax model bundle"):
        bundle.load(tmp_path)


def test_a_partial_scan_is_flagged_and_a_scan_without_its_region_refused(exported, training_records, tmp_path):
    _, model = exported
    cohort = training_records.parent / "cohort"
    source = sorted((cohort / "nifti").glob("*.nii.gz"))[0]
    series = source.name.removesuffix(".nii.gz")
    folder = tmp_path / "scans"
    (folder / "nifti").mkdir(parents=True)
    (folder / "masks").mkdir()
    mask = nib.load(cohort / "masks" / source.name)
    labels = np.asarray(mask.dataobj)
    lumbar = [spine_labels.vertebra_label(f"L{i}") for i in range(1, 6)]
    variants = {"partial": [lumbar[0]],  # L1 gone: 1 of the region's 10 levels, under the refusal share
                "no-lumbar": lumbar + [spine_labels.disc_label(f"L{i}-L{i + 1}") for i in range(1, 5)]}
    for name, removed in variants.items():
        shutil.copy(source, folder / "nifti" / f"{series}-{name}.nii.gz")
        kept = np.where(np.isin(labels, removed), 0, labels).astype(labels.dtype)
        nib.save(nib.Nifti1Image(kept, mask.affine, mask.header), folder / "masks" / f"{series}-{name}.nii.gz")
    table = predictor.predict_folder(model, folder, tmp_path / "out", progress=False)["table"].set_index("series_id")
    partial = table.loc[f"{series}-partial"]
    assert partial["status"] == "ok" and partial["levels_missing"] >= 1 and "levels_missing" in partial["qc_flags"]
    refused = table.loc[f"{series}-no-lumbar"]
    assert refused["status"] == "refused" and refused["code"] in ("region_partial", "region_absent")
    assert np.isnan(refused["predicted_age"])


def _source_copy(to: Path) -> Path:
    """The checkout's source files (pip builds in the source folder: never in the checkout itself)."""
    skip = shutil.ignore_patterns(".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache",
                                  ".whl", ".gpu", ".ruff_cache")
    return Path(shutil.copytree(Path(__file__).parents[1], to, ignore=skip))


def test_pip_install_into_a_clean_venv_gives_a_working_command(exported, training_records, tmp_path):
    _, model = exported
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # No network: the dependencies come from this environment's site-packages as a plain path entry (its .pth
    # files, among them the checkout's editable install, are not read), the way an offline mirror would.
    Path(site, "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    source = _source_copy(tmp_path / "source")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                           "--no-build-isolation", "--no-cache-dir", str(source)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    installed = sorted(p.name for p in Path(site).iterdir() if not p.name.endswith((".dist-info", ".pth")))
    assert installed == ["spinejax"], f"pip install . put these top-level names in site-packages: {installed}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([python, "-c", "import importlib.util, spinejax; "
                            "print(spinejax.__file__, [importlib.util.find_spec(m) for m in "
                            "('data_prep', 'analysis', 'configs')])"],
                           cwd=elsewhere, capture_output=True, text=True, check=True).stdout
    assert where.startswith(site) and where.strip().endswith("[None, None, None]"), where
    # Two scans of the cohort layout, predicted by the installed command from another directory.
    cohort = training_records.parent / "cohort"
    scans = tmp_path / "scans"
    for folder in ("nifti", "masks"):
        (scans / folder).mkdir(parents=True)
    for source_scan in sorted((cohort / "nifti").glob("*.nii.gz"))[:2]:
        shutil.copy(source_scan, scans / "nifti" / source_scan.name)
        shutil.copy(cohort / "masks" / source_scan.name, scans / "masks" / source_scan.name)
    done = subprocess.run([venv / "bin" / "spinejax-predict", f"--model={model}", f"--input={scans}",
                           f"--out={tmp_path / 'installed'}"], cwd=elsewhere, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    installed_table = pd.read_csv(tmp_path / "installed" / "predictions.csv")
    here = predictor.predict_folder(model, scans, tmp_path / "here", progress=False)["table"]
    assert list(installed_table["status"]) == ["ok", "ok"]
    # The clean venv has no oneDNN library built for it (spinejax.native), so it convolves with depth_concat:
    # the same function, other float32 rounding (tests/test_conv.py), not bit-identical ages.
    np.testing.assert_allclose(installed_table["predicted_age"].to_numpy(),
                               pd.read_csv(tmp_path / "here" / "predictions.csv")["predicted_age"].to_numpy(),
                               rtol=0, atol=1e-3)
    assert len(here) == 2


def test_evaluate_never_replaces_another_evaluation(evaluated):
    workdir, _ = evaluated
    with pytest.raises(InputError, match="never replaces another"):
        evaluate.evaluate(workdir, "latest", splits=("test",), out=str(workdir / "predictions"))
    assert workdir_format.evaluation_folder(workdir, "latest", str(workdir), str(workdir)).name.startswith(
        "predictions-latest-")
