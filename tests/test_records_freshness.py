"""build_records and eligibility outputs: fresh by content, never over the user's files, one run at a time."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from configs import eligibility as eligibility_config
from configs import records as records_config
from data_prep.normal import eligibility
from data_prep.records import build_records
from spinejax import output_folder
from spinejax.cohort import pseudonym
from spinejax.errors import InputError
from tests import processes

SECRET = b"freshness-test-secret-0123456789"
OTHER_SECRET = b"another-secret-entirely-98765432"


def _config(**overrides):
    config = records_config.get_config()
    config.update_from_flattened_dict({"workers": 1, "regions": ("whole", "lumbar"), **overrides})
    return config


def _index(out):
    return pd.read_csv(out / "index.csv", dtype=str, keep_default_na=False)


def test_a_corrected_row_a_replaced_mask_and_another_secret_each_rebuild(small_cohort, tmp_path):
    work = tmp_path / "cohort"
    shutil.copytree(small_cohort, work)
    out = tmp_path / "records"
    first = build_records.build(work, out, _config(), SECRET, progress=False)
    assert not first["skipped"] and first["counts"]["failed"] == 0
    assert build_records.build(work, out, _config(), SECRET, progress=False)["skipped"]

    # A corrected age: the records must carry the new value, not "already up to date".
    table = pd.read_csv(work / "reports.csv", dtype=str, keep_default_na=False)
    series_id = table.loc[0, "series_id"]
    table.loc[0, "age"] = "61.5"
    table.to_csv(work / "reports.csv", index=False)
    again = build_records.build(work, out, _config(), SECRET, progress=False)
    assert not again["skipped"] and "rebuilding" in again["announce"]
    ages = _index(out).set_index(["series_key", "region"])["age"]
    assert float(ages[(pseudonym.series_key(series_id, SECRET), "whole")]) == 61.5

    # A replaced mask (same name, other content): rebuilt, and the region it removed is refused.
    truth = json.loads((work / "ground_truth.json").read_text())
    target = truth["series"][0]["series_id"]  # every series has its mask in masks/, DICOM or NIfTI
    mask_path = work / "masks" / f"{target}.nii.gz"
    mask = nib.load(mask_path)
    labels = np.asarray(mask.dataobj).copy()
    labels[(labels >= 41) & (labels <= 45)] = 0  # the lumbar vertebrae are gone
    labels[(labels >= 91) & (labels <= 100)] = 0  # and the lumbar discs
    nib.save(nib.Nifti1Image(labels, mask.affine, mask.header), mask_path)
    rebuilt = build_records.build(work, out, _config(), SECRET, progress=False)
    assert not rebuilt["skipped"]
    refused = {(o["series_id"], o["region"]): o["code"] for o in rebuilt["outcomes"]}
    assert refused[(target, "lumbar")] == "region_absent"
    whole = _index(out).set_index(["series_key", "region"]).loc[(pseudonym.series_key(target, SECRET), "whole")]
    assert int(whole["levels_missing"]) == 11  # L1-L5 and the discs T12-L1 to L5-S1: 11 of 46, under 25%
    # Another secret: everything is rebuilt, and no key of the first secret survives.
    other = build_records.build(work, out, _config(), OTHER_SECRET, progress=False)
    assert not other["skipped"] and other["secret_fingerprint"] != first["secret_fingerprint"]
    keys = set(_index(out)["series_key"])
    assert keys and keys <= {pseudonym.series_key(s, OTHER_SECRET) for s in table["series_id"]}


def test_never_over_the_users_files_and_one_run_at_a_time(small_cohort, tmp_path):
    users = tmp_path / "mine"
    users.mkdir()
    (users / "notes.txt").write_text("my own notes")
    with pytest.raises(InputError, match="not written by spinejax"):
        build_records.build(small_cohort, users, _config(), SECRET, progress=False)
    assert (users / "notes.txt").read_text() == "my own notes" and len(list(users.iterdir())) == 1

    out = tmp_path / "records"
    build_records.build(small_cohort, out, _config(), SECRET, progress=False)
    (out / "my_plot.png").write_bytes(b"a file the user put into the records folder")
    with pytest.raises(InputError, match="did not write"):
        build_records.build(small_cohort, out, _config(shards_per_split=2), SECRET, progress=False)
    assert (out / "my_plot.png").exists()
    (out / "my_plot.png").unlink()
    with pytest.raises(InputError, match="records stage, not eligibility"):
        eligibility.run(small_cohort, out, eligibility_config.get_config(), SECRET)

    # A second run into a folder a first run is writing is refused at once; the first is unharmed.
    with output_folder.OutputFolder(out, "records"):
        with pytest.raises(InputError, match="another records run"):
            build_records.build(small_cohort, out, _config(shards_per_split=2), SECRET, progress=False)
    assert build_records.build(small_cohort, out, _config(shards_per_split=2), SECRET, progress=False)["counts"][
        "records"] > 0


def test_a_symlinked_out_keeps_its_link_and_its_target_is_replaced(small_cohort, tmp_path):
    target = tmp_path / "big_disk" / "records"
    target.parent.mkdir()
    link = tmp_path / "records"
    link.symlink_to(target, target_is_directory=True)
    build_records.build(small_cohort, link, _config(), SECRET, progress=False)
    rebuilt = build_records.build(small_cohort, link, _config(shards_per_split=2), SECRET, progress=False)
    assert not rebuilt["skipped"] and link.is_symlink() and (target / "manifest.json").is_file()
    assert json.loads((link / "manifest.json").read_text())["config"]["shards_per_split"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big_disk", "records"]  # nothing beside the link
    assert sorted(p.name for p in target.parent.iterdir()) == ["records", "records.lock"]


def test_expected_errors_are_one_line_without_a_traceback(small_cohort, tmp_path):
    empty = tmp_path / "empty_cohort"
    (empty / "dicom").mkdir(parents=True)
    key = tmp_path / "key"
    key.write_text(SECRET.decode())
    cases = {
        "no reports table": ([f"--input={empty}", f"--out={tmp_path / 'r1'}", f"--secret_file={key}"],
                             "no reports.csv"),
        "no secret file": ([f"--input={small_cohort}", f"--out={tmp_path / 'r2'}",
                            f"--secret_file={tmp_path / 'none'}"], "secret file"),
    }
    for name, (args, expected) in cases.items():
        done = subprocess.run([sys.executable, "-m", "data_prep.build_records", *args], cwd=processes.REPO,
                              capture_output=True, text=True)
        assert done.returncode == 2, (name, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (name, done.stderr)
        assert "Traceback" not in done.stdout + done.stderr
