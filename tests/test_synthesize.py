"""The synthetic cohort: files, geometry, masks, reports and truth agree with one another."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import stats

from data_prep.phantom import acquisition, anatomy, findings, render, synthesize, writers
from spinejax.errors import InputError
from spinejax.scans import spine_labels
from tests import dicom_reference as ref
from tests import processes

ALL_LABELS = ({spine_labels.CORD, spine_labels.CANAL, spine_labels.SACRUM}
              | {spine_labels.vertebra_label(v) for v in spine_labels.VERTEBRAE}
              | {spine_labels.disc_label(d) for d in spine_labels.DISC_LEVELS})


@pytest.fixture(scope="session")
def dicom_series(cohort):
    return ref.series_files(cohort / "dicom")


def test_layout_and_counts_add_up(cohort, truth, reports, dicom_series):
    series = truth["series"]
    assert truth["counts"]["series"] == len(series) == len(reports)
    assert truth["counts"]["subjects"] == 36 and len(truth["subjects"]) == 36
    dicom = [s for s in series if s["file_format"] == "dicom"]
    nifti = [s for s in series if s["file_format"] == "nifti"]
    assert len(dicom) + len(nifti) == len(series) and dicom and nifti
    assert set(dicom_series) == {s["series_id"] for s in dicom}
    assert sorted(p.name for p in (cohort / "nifti").iterdir()) == sorted(f"{s['series_id']}.nii.gz" for s in nifti)
    assert sorted(p.name for p in (cohort / "masks").iterdir()) == sorted(f"{s['series_id']}.nii.gz" for s in series)
    assert list(reports["series_id"]) == [s["series_id"] for s in series]
    assert len(findings.feature_columns()) == 207
    assert list(reports.columns[-207:]) == findings.feature_columns()
    # Repeat scans: some people have two series, each one row.
    assert reports["subject_id"].value_counts().max() == 2
    assert not list(cohort.parent.glob("*.partial"))  # the work folder was renamed into place


def test_truth_records_noise_floor_and_planted_effects(truth):
    floor = truth["noise_floor"]
    assert 3.4 < floor["bayes_mae"] < 4.0
    assert truth["planted_effects_years"]["smoking"] > 0 and truth["planted_effects_years"]["coffee"] == 0
    for record in truth["series"]:
        person = truth["subjects"][record["subject"]]
        expected = record["age"] + person["lifestyle_shift"] + person["individual_shift"]
        assert record["bio_age"] == pytest.approx(expected, abs=2e-3)


def test_dicom_geometry_is_what_was_intended(truth, dicom_series):
    by_id = {s["series_id"]: s for s in truth["series"]}
    reordered = 0
    syntaxes = set()
    for uid, paths in dicom_series.items():
        record = by_id[uid]
        assert len(paths) == record["n_files"] == record["shape_kji"][0]
        volume, affine, datasets = ref.read_series(paths)
        np.testing.assert_allclose(affine, record["affine_lps_ijk"], atol=2e-3)
        assert list(volume.shape) == record["shape_kji"]
        spacing = np.linalg.norm(affine[:3, 2])
        assert spacing == pytest.approx(record["spacing_kji"][0], abs=1e-3)
        assert float(datasets[0].SliceThickness) == record["slice_thickness"]
        instance = [int(d.InstanceNumber) for d in datasets]
        reordered += instance != sorted(instance)
        syntaxes.add(datasets[0].file_meta.TransferSyntaxUID.name)
        assert datasets[0].Modality == "MR" and datasets[0].SOPClassUID == pydicom.uid.MRImageStorage
    assert reordered > 0  # InstanceNumber does not follow position in some series
    assert len(syntaxes) >= 2


def _convert_with_dcm2niix(paths: list[Path], out: Path) -> nib.Nifti1Image:
    folder = out / "in"
    folder.mkdir(parents=True)
    for n, path in enumerate(paths):
        os.symlink(path, folder / f"f{n}.dcm")
    binary = Path(sys.executable).with_name("dcm2niix")
    subprocess.run([str(binary), "-z", "n", "-f", "converted", "-o", str(out), str(folder)], check=True,
                   capture_output=True)
    return nib.load(out / "converted.nii")


def test_dcm2niix_reads_the_same_geometry_and_voxels(truth, dicom_series, tmp_path):
    by_id = {s["series_id"]: s for s in truth["series"]}
    chosen = {}
    for uid, paths in dicom_series.items():  # one series per transfer syntax
        chosen.setdefault(by_id[uid]["transfer_syntax"], (uid, paths))
    for n, (syntax, (uid, paths)) in enumerate(sorted(chosen.items())):
        volume, affine, _ = ref.read_series(paths)
        np.testing.assert_allclose(affine, by_id[uid]["affine_lps_ijk"], atol=2e-3)
        converted = _convert_with_dcm2niix(paths, tmp_path / str(n))
        ours, theirs = ref.values_at_world(volume, affine, converted)
        np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-3, err_msg=syntax)


def test_dicom_and_nifti_of_one_phantom_give_the_same_voxels(tmp_path):
    spine = anatomy.draw_spine(11, 47.0, "M", "")
    rng = np.random.default_rng(5)
    acq = acquisition.draw_acquisition(rng, "site_D", render.spine_length(spine), 0.0)
    image, _ = render.render(spine, acq, rng)
    stored = writers.to_stored(image, acq)
    uid = writers.make_uid("test-series")
    who = writers.Identity("DOE^JANE", "MRN1", "19700101", "F", 50, "A1", "20200101", writers.make_uid("s"),
                           uid, writers.make_uid("f"), 3, "TEST")
    names = [f"slice{k}" for k in range(acq.n_slices)]
    paths = writers.write_dicom_series(tmp_path / "dicom", stored, acq, who, names)
    volume, affine, _ = ref.read_series(paths)
    for axes, flips in [((2, 1, 0), (False, False, False)), ((0, 2, 1), (True, False, True)),
                        ((1, 0, 2), (False, True, False))]:
        layout = dataclasses.replace(acq, nifti_axes=axes, nifti_flips=flips)
        path = tmp_path / f"scan{axes}{flips}.nii.gz"
        writers.atomic_write(path, writers.nifti_bytes(stored, layout, acq.rescale_slope, acq.rescale_intercept))
        ours, theirs = ref.values_at_world(volume, affine, nib.load(path))
        np.testing.assert_array_equal(theirs, ours)


def test_masks_lie_on_their_scans_grid_and_hold_every_structure(cohort, truth):
    for record in truth["series"]:
        mask = nib.load(cohort / "masks" / f"{record['series_id']}.nii.gz")
        if record["file_format"] == "nifti":
            scan = nib.load(cohort / record["path"])
            np.testing.assert_allclose(mask.affine, scan.affine, atol=1e-4)
            assert mask.shape == scan.shape
        else:
            np.testing.assert_allclose(mask.affine, ref.LPS_TO_RAS @ np.array(record["affine_lps_ijk"]), atol=1e-3)
            assert mask.shape == tuple(record["shape_kji"][::-1])
        labels = set(np.unique(np.asarray(mask.dataobj)).tolist()) - {0}
        assert labels == ALL_LABELS, record["series_id"]


def _mask_kji(cohort, record) -> tuple[np.ndarray, float]:
    mask = nib.load(cohort / "masks" / f"{record['series_id']}.nii.gz")
    return np.asarray(mask.dataobj), float(abs(np.linalg.det(mask.affine[:3, :3])))


def test_disc_height_measured_on_masks_falls_with_biological_age(cohort, truth):
    lumbar_discs = [spine_labels.disc_label(d) for d in ("L1-L2", "L2-L3", "L3-L4", "L4-L5")]
    lumbar_bones = [spine_labels.vertebra_label(v) for v in ("L1", "L2", "L3", "L4", "L5")]
    ratio, bio = [], []
    for record in truth["series"]:
        if record["abnormal_kind"]:
            continue
        labels, _ = _mask_kji(cohort, record)
        counts = np.bincount(labels.ravel(), minlength=101)
        ratio.append(counts[lumbar_discs].sum() / counts[lumbar_bones].sum())  # size-free disc volume
        bio.append(record["bio_age"])
    rho = stats.spearmanr(bio, ratio).statistic
    assert rho < -0.6, rho


def test_reports_grade_what_was_drawn(truth, reports):
    by_series = reports.set_index("series_id")
    for record in truth["series"][:12]:
        person = truth["subjects"][record["subject"]]
        spine = anatomy.draw_spine(synthesize.person_seed(truth["spec"]["seed"], record["subject"]),
                                   record["bio_age"], person["sex"], record["abnormal_kind"])
        expected = findings.report(spine)
        row = by_series.loc[record["series_id"], list(expected)]
        assert row.to_dict() == expected
        np.testing.assert_allclose(spine.fracture, record["fracture"], atol=1e-4)


def test_reported_severity_grows_with_age_and_abnormal_spines_stand_out(truth, reports):
    kinds = {r["series_id"]: r["abnormal_kind"] for r in truth["series"]}
    bio = reports["series_id"].map({r["series_id"]: r["bio_age"] for r in truth["series"]})
    grades = reports[findings.feature_columns()]
    burden = grades.sum(axis=1)
    normal = reports["series_id"].map(kinds) == ""
    assert stats.spearmanr(bio[normal], burden[normal]).statistic > 0.7
    seen = set()
    for series_id, kind in kinds.items():
        row = grades[reports["series_id"] == series_id].iloc[0]
        if kind == "multiple_fractures":
            assert (row.filter(like="fracture__") >= 2).sum() >= 2
        elif kind == "focal_stenosis":
            assert row.filter(like="canal_stenosis__").max() == 3
        elif kind == "spondylolisthesis":
            assert row.filter(like="listhesis__").max() >= 2
        seen.add(kind)
    assert {"multiple_fractures", "focal_stenosis", "spondylolisthesis"} <= seen


def test_dicom_carries_fake_identifiers_for_deidentification_to_remove(cohort, truth, dicom_series):
    by_id = {s["series_id"]: s for s in truth["series"]}
    for uid, paths in list(dicom_series.items())[:5]:
        header = pydicom.dcmread(paths[0], stop_before_pixels=True)
        person = truth["subjects"][by_id[uid]["subject"]]
        assert header.PatientID == person["subject_id"]
        assert "^" in str(header.PatientName) and len(header.PatientBirthDate) == 8
        assert header.AccessionNumber
        birth, study = (np.datetime64(f"{d[:4]}-{d[4:6]}-{d[6:]}") for d in
                        (header.PatientBirthDate, header.StudyDate))
        assert int(header.PatientAge[:3]) == int((study - birth).astype(int) // 365.25)


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    spec = synthesize.CohortSpec(subjects=5, seed=10, nifti_share=0.4)
    synthesize.synthesize(tmp_path / "one", spec, workers=1, progress=False)
    synthesize.synthesize(tmp_path / "two", spec, workers=2, progress=False)
    assert _tree_digest(tmp_path / "one") == _tree_digest(tmp_path / "two")
    series = json.loads((tmp_path / "one" / "ground_truth.json").read_text())["series"]
    formats = {s["transfer_syntax"] or s["file_format"] for s in series}
    assert {"nifti", "RLELossless", "ImplicitVRLittleEndian"} <= formats  # compressed DICOM too
    other = dataclasses.replace(spec, seed=4)
    synthesize.synthesize(tmp_path / "other", other, workers=1, progress=False)
    assert _tree_digest(tmp_path / "other") != _tree_digest(tmp_path / "one")


def test_killed_run_started_again_finishes_with_the_same_bytes(tmp_path):
    out = tmp_path / "cohort"
    command = [sys.executable, "-m", "data_prep.synthesize", f"--out={out}", "--subjects=8", "--seed=5",
               "--workers=1"]
    done = out.with_name("cohort.partial") / ".done"
    processes.kill_when(command, done, "*.json", 3)
    assert not (out / "ground_truth.json").exists()
    finished_before = len(list(done.glob("*.json")))
    partial = done.parent
    finished = [json.loads(p.read_text())["truth"]["series_id"] for p in done.glob("*.json")]
    kept = {Path("masks") / f"{uid}.nii.gz": (partial / "masks" / f"{uid}.nii.gz").stat().st_mtime_ns
            for uid in finished}
    processes.run(command)
    # Finished series were kept, not drawn again (their masks were written once).
    assert {p: (out / p).stat().st_mtime_ns for p in kept} == kept
    clean = tmp_path / "clean"
    synthesize.synthesize(clean, synthesize.CohortSpec(subjects=8, seed=5), workers=1, progress=False)
    assert finished_before >= 3
    assert _tree_digest(out) == _tree_digest(clean)


def test_complete_cohort_is_kept_and_foreign_folders_are_refused(tmp_path):
    spec = synthesize.CohortSpec(subjects=2, seed=1)
    out = tmp_path / "cohort"
    synthesize.synthesize(out, spec, workers=1, progress=False)
    assert synthesize.synthesize(out, spec, workers=1, progress=False)["skipped"]
    with pytest.raises(InputError, match="different cohort"):
        synthesize.synthesize(out, dataclasses.replace(spec, seed=2), workers=1, progress=False)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a synthetic cohort"):
        synthesize.synthesize(foreign, spec, workers=1, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
