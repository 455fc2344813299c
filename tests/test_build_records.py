"""build_records: every input ends as records or a failure, nothing identifying leaks, output is repeatable."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import sys
from pathlib import Path

import grain
import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pydicom.data
import pytest

from configs import records as records_config
from data_prep.records import build_records, splits
from spinejax import records
from spinejax.cohort import pseudonym
from spinejax.errors import InputError
from spinejax.scans import spine_labels
from tests import dicom_reference as ref
from tests import processes

SECRET = b"records-test-secret-0123456789"


def _config(**overrides):
    config = records_config.get_config()
    config.update_from_flattened_dict({"workers": 2, **overrides})
    return config


@pytest.fixture(scope="module")
def built(cohort, truth, tmp_path_factory):
    """The session cohort plus broken inputs, built once."""
    root = tmp_path_factory.mktemp("records")
    messy = root / "cohort"
    shutil.copytree(cohort, messy)
    series = ref.series_files(messy / "dicom")
    junk = messy / "dicom" / "junk"
    junk.mkdir()
    (junk / "empty").write_bytes(b"")
    (junk / "readme.txt").write_text("exported by PACS")
    shutil.copy(pydicom.data.get_testdata_file("MR_truncated.dcm"), junk / "MR_truncated.dcm")
    dicom_ids = [s["series_id"] for s in truth["series"] if s["file_format"] == "dicom"]
    nifti_ids = [s["series_id"] for s in truth["series"] if s["file_format"] == "nifti"]
    broken = {"missing slice": dicom_ids[0], "NaN": nifti_ids[0], "mask grid": nifti_ids[1]}
    sorted(series[broken["missing slice"]])[5].unlink()
    scan = nib.load(messy / "nifti" / f"{broken['NaN']}.nii.gz")
    data = scan.get_fdata()
    data[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(data.astype(np.float32), scan.affine), messy / "nifti" / f"{broken['NaN']}.nii.gz")
    mask = nib.load(messy / "masks" / f"{broken['mask grid']}.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(mask.dataobj)[:-3], mask.affine),
             messy / "masks" / f"{broken['mask grid']}.nii.gz")
    manifest = build_records.build(messy, root / "records", _config(), SECRET, progress=False)
    return root, manifest, broken


def test_every_input_ends_as_records_or_a_failure_with_its_reason(built, truth):
    root, manifest, broken = built
    out = root / "records"
    counts = manifest["counts"]
    n_series = len(truth["series"])
    assert counts["inputs"] == n_series + 3  # the cohort's series, 2 junk files, 1 truncated MR
    assert counts["processed"] + counts["failed"] == counts["inputs"]
    assert counts["processed"] == n_series - 3 and counts["failed"] == 6
    failures = pd.read_csv(out / "failures.csv", keep_default_na=False)
    codes = set(failures["code"])
    assert {"not_dicom", "no_report_row", "missing_slices", "non_finite", "mask_grid"} <= codes, codes
    assert sum(counts["by_code"].values()) == len(failures)
    # Each failure says which input in the console-only outcomes, and only there.
    by_where = {o["where"]: o["code"] for o in manifest["outcomes"]}
    assert by_where["dicom/junk/empty"] == by_where["dicom/junk/readme.txt"] == "not_dicom"
    assert by_where[f"nifti/{broken['NaN']}.nii.gz"] == "non_finite"
    index = pd.read_csv(out / "index.csv")
    assert len(index) == counts["records"] == 4 * counts["processed"] - counts["region_failures"]
    assert set(index["region"]) == {"whole", "cervical", "thoracic", "lumbar"}
    exported = pd.read_csv(out / "reports.csv")
    assert len(exported) == counts["processed"] and exported["series_key"].is_unique
    assert {"smoking", "coffee", "disc_bulge__L4-L5", "split"} <= set(exported.columns)
    assert "subject_id" not in exported.columns and "series_id" not in exported.columns
    fingerprint = manifest["data_fingerprint"]
    assert fingerprint["regions"]["whole"]["cropped_share"] < 0.05  # the default grid holds the spine


def test_records_decode_through_grain_and_carry_plan_and_truthful_fields(built, truth):
    root, manifest, _ = built
    out = root / "records"
    index = pd.read_csv(out / "index.csv")
    ages = {pseudonym.series_key(s["series_id"], SECRET): s["age"] for s in truth["series"]}
    for (region, shard), rows in index.groupby(["region", "shard"]):
        source = grain.sources.ArrayRecordDataSource([str(out / shard)])
        assert len(source) == len(rows)
        for row in rows.itertuples():
            fields = records.decode(source[row.position], expected_plan_hash=manifest["plan_hash"])
            assert fields["series_key"] == row.series_key and fields["region"] == region
            assert fields["age"] == pytest.approx(ages[row.series_key])
            assert list(fields["volume"].shape) == manifest["shapes"][region]
            inside = fields["volume"][fields["mask"] > 0].astype(np.float32)
            assert abs(inside.mean()) < 0.05 and abs(inside.std() - 1) < 0.05
            assert (fields["volume"][fields["mask"] == 0] == 0).all()
            # The label map is on the same grid: the region's own vertebrae are there, inside the mask.
            present = set(np.unique(fields["labels"]))
            wanted = (set(spine_labels.labels_of_region(region)) if region != "whole"
                      else {spine_labels.vertebra_label("C2"), spine_labels.vertebra_label("L5")})
            assert fields["labels"].shape == fields["volume"].shape and len(wanted & present) >= 2
            assert (fields["mask"][fields["labels"] > 0] == 1).all()
    first = grain.sources.ArrayRecordDataSource([str(out / index["shard"].iloc[0])])[0]
    with pytest.raises(ValueError, match="rebuild the records"):
        records.decode(first, expected_plan_hash="another-plan")


def test_splits_are_by_subject_and_stable(built):
    root, _, _ = built
    index = pd.read_csv(root / "records" / "index.csv")
    assert (index.groupby("subject_key")["split"].nunique() == 1).all()
    for row in index.head(20).itertuples():
        assert row.split == splits.split_of(row.subject_key)
    # Stable when subjects are added: a key's split never depends on anyone else.
    keys = [f"{n:024x}" for n in range(4000)]
    shares = pd.Series([splits.split_of(k) for k in keys]).value_counts(normalize=True)
    assert abs(shares["train"] - 0.8) < 0.03 and abs(shares["test"] - 0.1) < 0.02


def test_nothing_identifying_and_no_secret_in_any_output(built, cohort):
    root, _, _ = built
    needles = {SECRET}
    for paths in ref.series_files(cohort / "dicom").values():
        header = pydicom.dcmread(paths[0], stop_before_pixels=True)
        needles |= {str(header.PatientName).encode(), str(header.PatientName).split("^")[0].encode(),
                    header.PatientID.encode(), header.PatientBirthDate.encode(), header.AccessionNumber.encode(),
                    header.StudyInstanceUID.encode(), header.SeriesInstanceUID.encode(),
                    header.SOPInstanceUID.encode()}
    for path in (cohort / "nifti").iterdir():
        needles.add(path.name.split(".nii")[0].encode())  # NIfTI series ids are original UIDs
    files = [p for p in (root / "records").rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        data = path.read_bytes()
        # Compressed bytes (shards, PNG pictures) are random-looking, and a 3-letter surname turns up in them by
        # chance: short needles are looked for where text can be (text files, each record's JSON header), ids,
        # UIDs and dates (8 characters or more) in every file's bytes.
        texts = [data] if path.suffix in (".csv", ".json", ".md", ".txt", ".yaml") else []
        if path.suffix == ".array_record":
            source = grain.sources.ArrayRecordDataSource([str(path)])
            texts = [bytes(source[i][:8 + struct.unpack("<I", source[i][4:8])[0]]) for i in range(len(source))]
        for needle in needles:
            assert not any(needle in text for text in texts), (path.name, needle)
            assert len(needle) < 8 or needle not in data, (path.name, needle)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_bytes_whatever_the_workers_and_after_a_kill(small_cohort, tmp_path, monkeypatch):
    one = build_records.build(small_cohort, tmp_path / "one", _config(workers=1), SECRET, progress=False)
    monkeypatch.setattr(build_records, "LISTING_POOL_MIN_FILES", 0)  # headers read by the pool too
    two = build_records.build(small_cohort, tmp_path / "two", _config(workers=2), SECRET, progress=False)
    monkeypatch.undo()
    assert one["counts"] == two["counts"] and one["counts"]["failed"] == 0
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")
    assert build_records.build(small_cohort, tmp_path / "one", _config(workers=1), SECRET,
                               progress=False)["skipped"]

    monkeypatch.setenv(pseudonym.SECRET_ENV, SECRET.decode())
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "data_prep.build_records", f"--input={small_cohort}", f"--out={out}",
               "--config.workers=1"]
    processes.kill_when(command, out.with_name("killed.partial") / ".cache", "*.npz", 2)
    assert not (out / "manifest.json").exists()
    processes.run(command)
    assert _digest(out) == _digest(tmp_path / "one")
    assert json.loads((out / "manifest.json").read_text())["counts"] == one["counts"]


def test_a_sites_own_split_file_or_held_out_sites_decide_the_split(small_cohort, tmp_path):
    reports = pd.read_csv(small_cohort / "reports.csv", dtype=str, keep_default_na=False)
    subjects = sorted(set(reports["subject_id"]))
    chosen = {s: ("train", "validation", "test")[n % 3] for n, s in enumerate(subjects)}
    split_file = tmp_path / "splits.csv"
    pd.DataFrame({"subject_id": list(chosen), "split": list(chosen.values())}).to_csv(split_file, index=False)
    build_records.build(small_cohort, tmp_path / "by_file", _config(split_file=str(split_file)), SECRET,
                        progress=False)
    index = pd.read_csv(tmp_path / "by_file" / "index.csv")
    wanted = {pseudonym.subject_key(s, SECRET): split for s, split in chosen.items()}
    assert (index["split"] == index["subject_key"].map(wanted)).all() and index["split"].nunique() == 3

    pd.DataFrame({"subject_id": subjects[1:], "split": "train"}).to_csv(split_file, index=False)
    with pytest.raises(InputError, match="lacks 1 of"):
        build_records.build(small_cohort, tmp_path / "short", _config(split_file=str(split_file)), SECRET,
                            progress=False)
    pd.DataFrame({"subject_id": [subjects[0]] * 2, "split": ["train", "test"]}).to_csv(split_file, index=False)
    with pytest.raises(InputError, match="line 3: the subject of line 2 again"):
        build_records.build(small_cohort, tmp_path / "twice", _config(split_file=str(split_file)), SECRET,
                            progress=False)

    held_out = reports["site"].iloc[0]
    manifest = build_records.build(small_cohort, tmp_path / "by_site", _config(test_sites=(held_out,)), SECRET,
                                   progress=False)
    index = pd.read_csv(tmp_path / "by_site" / "index.csv")
    at_site = {pseudonym.subject_key(s, SECRET) for s in reports.loc[reports["site"] == held_out, "subject_id"]}
    assert at_site and set(index.loc[index["split"] == "test", "subject_key"]) == at_site
    assert held_out not in json.dumps(manifest["config"])  # the site's name stays out of the outputs


# Apache Beam (data_prep.records.beam_engine): requirements.txt installs it, so CI runs these.
def test_beam_engine_under_the_direct_runner_writes_the_local_pools_bytes(built, monkeypatch):
    root, manifest, broken = built
    monkeypatch.setenv(pseudonym.SECRET_ENV, SECRET.decode())
    out = root / "records_beam"
    processes.run([sys.executable, "-m", "data_prep.build_records", f"--input={root / 'cohort'}", f"--out={out}",
                   "--engine=beam", "--", "--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    assert _digest(out) == _digest(root / "records")  # shards, index, failures, reports, manifest, QC pictures
    beam_manifest = json.loads((out / "manifest.json").read_text())
    assert beam_manifest["counts"] == manifest["counts"] and manifest["counts"]["failed"] >= len(broken)
    assert not list(out.rglob("*.tmp*"))


def test_beam_reruns_retries_and_duplicated_work_leave_one_copy_of_each_record(small_cohort, tmp_path,
                                                                                monkeypatch):
    from data_prep.records import beam_engine

    local = build_records.build(small_cohort, tmp_path / "local", _config(), SECRET, progress=False)
    monkeypatch.setenv(pseudonym.SECRET_ENV, SECRET.decode())
    # One process, so that the failures injected below reach the pipeline's workers.
    options = beam_engine.pipeline_options(["--direct_running_mode=in_memory", "--direct_num_workers=1"], 1)
    out = tmp_path / "beam"
    real_process, real_write = build_records.process_job, build_records.write_shard
    failed = []

    def process_then_fail_once(job, *args, **kwargs):  # a worker lost after its output was written
        key = real_process(job, *args, **kwargs)
        if not failed:
            failed.append(key)
            raise OSError("worker lost")
        return key

    def write_part_then_fail_once(partial, name, entries):  # a shard write cut off half-way
        if len(failed) == 1:
            failed.append(name)
            real_write(partial, name, entries[: len(entries) // 2])
            path = Path(partial) / name
            path.rename(path.with_name(f".{path.name}.tmp999-1"))  # where write_shard's own killed write stops
            raise OSError("worker lost")
        return real_write(partial, name, entries)

    monkeypatch.setattr(build_records, "process_job", process_then_fail_once)
    monkeypatch.setattr(build_records, "write_shard", write_part_then_fail_once)
    for _ in range(2):  # each run fails once, as a preempted job would; the next resumes
        with pytest.raises(InputError, match="Beam pipeline failed.*run the same command again"):
            build_records.build(small_cohort, out, _config(), SECRET, progress=False,
                                engine=beam_engine.BeamEngine(options))
        assert not (out / "manifest.json").exists()
    assert list(out.parent.glob("beam.partial/*/.*.tmp999-1"))

    class EveryInputTwice(beam_engine.BeamEngine):  # what a runner's retry of a whole bundle amounts to
        def run(self, jobs, *args):
            super().run(jobs + jobs[::-1], *args)

    again = build_records.build(small_cohort, out, _config(), SECRET, progress=False, engine=EveryInputTwice(options))
    assert len(failed) == 2 and again["counts"] == local["counts"] and local["counts"]["failed"] == 0
    assert _digest(out) == _digest(tmp_path / "local") and not list(out.rglob("*.tmp*"))


def test_a_beam_worker_with_another_secret_is_refused(small_cohort, tmp_path, monkeypatch):
    from data_prep.records import beam_engine

    monkeypatch.setenv(pseudonym.SECRET_ENV, "another-secret-0123456789")
    options = beam_engine.pipeline_options(["--direct_running_mode=in_memory", "--direct_num_workers=1"], 1)
    with pytest.raises(InputError, match="another secret than the launcher"):
        build_records.build(small_cohort, tmp_path / "beam", _config(), SECRET, progress=False,
                            engine=beam_engine.BeamEngine(options))
