"""De-identification under attack: identifying values planted everywhere an archive hides them never reach
an output of build_records or eligibility, as root and as an unprivileged user, on success and on error paths.

A small synthetic cohort is dressed up as a real archive: names, MRNs, dates, accession numbers, addresses
and free text in DICOM tags (a private block too), in file and folder names, in NIfTI file names and header
text, in reports.csv cells, in the reports header, in the ids and in the cohort folder's own name; plus inputs
that fail (a file unreadable to the user, a file name holding ': ' and a name, a corrupt NIfTI named after a
patient, a DICOM header with a name where a number belongs, a truncated header), since error messages are
where identifiers slip out. Both stages run as command-line programs, exactly as a user runs them. Every byte
of every file they write is then searched for every planted value (several spellings and encodings), and
so is every decoded ArrayRecord record (shards may be compressed), PNG text chunks and gzip/zip members.
Raw ids may appear only as keyed hashes (never unkeyed, never keyed without the secret); the secret and
absolute paths never appear. The console may name paths and raw ids (docs/ingestion.md), but says each problem
on one line, without a traceback; a refused table is one `error:` line holding no header or cell value.

The unprivileged run is `nobody`: with this interpreter when nobody can run it, else (an interpreter under
/root, as with pyenv) with the system's Python of the same version and this environment's packages.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import gzip
import hashlib
import hmac
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import sysconfig
import tempfile
import unicodedata
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from data_prep.phantom import synthesize

REPO = Path(__file__).resolve().parents[1]
SECRET = "deid-secret-9f4c1e7a2b6d8035c4e1f9a7b2d6c8035e1a"  # distinctive, so a leak of it is found

# What the test plants (besides the synthetic cohort's own names, MRNs, UIDs and dates, collected below).
MRN = "MRN0048213"
NAMES = ("MÜLLER^Hans", "O'BRIEN^Siobhan", "SMITH^John", "QUIMBY^Theodora", "VANTERPOOL^Ignatius",
         "LARKIN^Rosalind")
PLANTED = (
    MRN, "0048213", "NHS9434765919", "A77812", "ACC5531907",
    "19620314", "1962-03-14", "14.03.1962", "14/03/1962", "03/14/1962", "20190312", "2019-03-12",
    "ST ELSEWHERE HOSPITAL", "ELSEWHERE", "12 Harbour Road, Dunmore", "Harbour Road", "Dunmore",
    "7 Larkspur Lane", "Larkspur", "ELSEWHERE_MR1", "555-0199",
    "SMITH_John_MRN0048213", "20190312_A77812", "O'BRIEN^Siobhan MRN0048213", "MUELLER", "Müller",
)
HEADER_NAME = "O'BRIEN^Siobhan MRN0048213"  # a column of reports.csv named after a patient
NEWLINE_TAIL = "MÜLLER^Hans.dcm"  # the part after a newline in a planted file name

# Reason codes (docs/ingestion.md).
FILE_CODES = ("unreadable_file", "not_dicom", "bad_dicom_header", "no_image_geometry", "bad_orientation",
              "siemens_mosaic", "no_frame_geometry", "duplicate_instance", "not_nifti")
SERIES_CODES = ("other_part", "no_report_row", "report_row_rejected", "duplicate_series", "duplicate_scan",
                "not_sagittal", "duplicate_positions", "missing_slices", "uneven_spacing", "too_few_slices",
                "pixel_decode", "non_finite", "constant_image", "no_orientation", "bad_voxel_size", "not_3d",
                "unreadable_scan", "no_mask", "ambiguous_mask", "unreadable_mask", "mask_not_labels",
                "mask_grid", "mask_no_spine", "region_absent", "region_partial", "region_too_small")
ROW_CODES = ("wrong_field_count", "missing_series_id", "duplicate_series_id", "missing_subject_id",
             "missing_age", "bad_age", "age_out_of_range", "bad_sex", "undeclared_site", "bad_value",
             "bad_grade")
ALL_CODES = FILE_CODES + SERIES_CODES + ROW_CODES

SHORT = 6  # needles shorter than this match only as whole words, and only in text (not in voxel bytes)
TEXT_SUFFIXES = {".csv", ".json", ".txt", ".log", ".md", ".tsv", ".yaml", ".yml", ".html", ".svg"}


# --------------------------------------------------------------------------------------------- needles


@dataclasses.dataclass(frozen=True)
class Needle:
    label: str  # the planted value as planted
    patterns: tuple[bytes, ...]  # lower-cased byte spellings searched in lower-cased data
    short: bool  # matched only as a whole word, and only in text
    text_only: bool = False  # searched in text only (hex digests)


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def _needle(value: str) -> Needle:
    spellings = set()
    for variant in {value, value.upper(), value.lower(), value.title(), _fold(value)}:
        for encode in (lambda v: v.encode("utf-8"), lambda v: v.encode("latin-1"),
                       lambda v: json.dumps(v)[1:-1].encode(), lambda v: v.encode("utf-16-le")):
            try:
                spellings.add(encode(variant).lower())
            except UnicodeEncodeError:
                pass
    return Needle(value, tuple(sorted(s for s in spellings if s)), len(value) < SHORT)


def _unkeyed_hashes(values: set[str]) -> list[Needle]:
    """The first 16 hex characters of unkeyed digests of each value, and of keys made without a secret
    (HMAC under an empty key, as spinejax.cohort.pseudonym would with b''): guessable ids behind them are found
    by trying every MRN or path, so they are as good as the id itself."""
    out = []
    for value in sorted(v for v in values if len(v) >= SHORT):
        data = value.encode()
        digests = [hashlib.md5(data).hexdigest(), hashlib.sha1(data).hexdigest(),
                   hashlib.sha256(data).hexdigest(), hashlib.blake2b(data).hexdigest()]
        digests += [hmac.new(b"", f"{kind}\x1f{value}".encode(), hashlib.sha256).hexdigest()
                    for kind in ("subject", "series", "input")]
        out += [Needle(f"unkeyed hash of {value!r}", (d[:16].encode(),), False, True) for d in digests]
    return out


def _name_parts(name: str) -> set[str]:
    """'O'BRIEN^Siobhan' -> the whole name, each part, and the parts without punctuation."""
    out = {name, name.replace("^", " "), " ".join(reversed(name.split("^")))}
    for part in re.split(r"[\^\s_,]+", name):
        if len(part) >= 3:
            out |= {part, _fold(part), part.replace("'", ""), part.split("'")[-1]}
    return {p for p in out if len(p) >= 3}


def _needles(values: set[str]) -> list[Needle]:
    return [_needle(v) for v in sorted(values) if v.strip()]


# ---------------------------------------------------------------------------------------------- corpus


def _dicom_files(root: Path) -> dict[str, list[Path]]:
    """SeriesInstanceUID -> files, for the synthetic cohort's DICOM files."""
    series: dict[str, list[Path]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        series.setdefault(str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID), []).append(path)
    return series


def _dicom_needles(dicom_root: Path) -> set[str]:
    """Identifying values in the DICOM files under `dicom_root` (and their file and folder names)."""
    out = set()
    for path in sorted(p for p in dicom_root.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - the planted broken files
            continue
        if "SOPInstanceUID" not in ds:
            continue
        out |= _name_parts(str(ds.PatientName)) | _name_parts(str(ds.ReferringPhysicianName))
        out |= {str(ds.get(k, "")) for k in ("PatientID", "PatientBirthDate", "AccessionNumber", "StudyDate",
                                             "InstitutionName", "StudyInstanceUID", "SeriesInstanceUID",
                                             "SOPInstanceUID", "FrameOfReferenceUID")}
        if len(path.stem) >= 10:
            out.add(path.stem)  # flat exports name files after UIDs
        out |= {part for part in path.relative_to(dicom_root).parts[:-1] if re.search(r"\d{6}", part)}
    return {v for v in out if v}


def _plant_tags(ds: pydicom.Dataset) -> None:
    """Every identifying tag of one DICOM dataset, filled with the planted patient."""
    ds.SpecificCharacterSet = "ISO_IR 100"  # Latin-1: 'Ü' is one byte in the file
    ds.PatientName = "MÜLLER^Hans"
    ds.PatientID = MRN
    ds.OtherPatientIDs = ["NHS9434765919", MRN]
    ds.PatientBirthDate = "19620314"
    ds.PatientAddress = "7 Larkspur Lane, Dunmore"
    ds.PatientTelephoneNumbers = "555-0199"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20190312"
    ds.AccessionNumber = "A77812"
    ds.InstitutionName = "ST ELSEWHERE HOSPITAL"
    ds.InstitutionAddress = "12 Harbour Road, Dunmore"
    ds.StationName = "ELSEWHERE_MR1"
    ds.ReferringPhysicianName = "QUIMBY^Theodora"
    ds.PerformingPhysicianName = "VANTERPOOL^Ignatius"
    ds.OperatorsName = "LARKIN^Rosalind"
    ds.StudyDescription = f"MRI SPINE for MÜLLER Hans ({MRN})"
    ds.SeriesDescription = "T2 SAG O'BRIEN^Siobhan"
    ds.ImageComments = "Siobhan O'Brien, DOB 14.03.1962, ph 555-0199, ref Dr Quimby"
    block = ds.private_block(0x0011, "ACME PACS 1.0", create=True)
    block.add_new(0x10, "LO", f"MÜLLER^Hans {MRN}")
    block.add_new(0x11, "LT", "Patient O'BRIEN^Siobhan born 19620314 at ST ELSEWHERE HOSPITAL")


def _new_series(ds: pydicom.Dataset, tag: str, k: int) -> None:
    """A fresh SeriesInstanceUID (and SOPInstanceUID) for a copied slice."""
    ds.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["deid-series", tag])
    ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["deid-sop", tag, str(k)])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def _without_geometry(template: Path, tag: str) -> bytes:
    """A DICOM object with no image (a text SR): the patient's name in it, no geometry."""
    ds = pydicom.dcmread(template)
    for keyword in ("PixelData", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows",
                    "Columns", "SliceLocation"):
        if keyword in ds:
            delattr(ds, keyword)
    _new_series(ds, tag, 0)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.Modality = "SR"
    ds.PatientName = "O'BRIEN^Siobhan"
    ds.PatientID = MRN
    ds.ImageComments = "Findings discussed with Siobhan O'Brien (MRN0048213) on 2019-03-12"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _rewrite_nifti(source: Path, target: Path, descrip: str, aux: str, intent: str, comment: str) -> None:
    """`source` with text in descrip, aux_file and intent_name and a comment extension; voxels unchanged
    (the header is patched byte by byte: nibabel would rescale the data on saving)."""
    raw = bytearray(gzip.decompress(source.read_bytes()))
    assert struct.unpack("<i", raw[:4])[0] == 348, "expected a little-endian NIfTI-1 file"
    offset = int(struct.unpack("<f", raw[108:112])[0])
    for at, size, text in ((148, 80, descrip), (228, 24, aux), (328, 16, intent)):
        value = text.encode()
        assert len(value) < size
        raw[at:at + size] = value.ljust(size, b"\0")
    body = comment.encode()
    size = (8 + len(body) + 15) // 16 * 16
    extension = struct.pack("<ii", size, 6) + body.ljust(size - 8, b"\0")  # 6: a comment
    raw[108:112] = struct.pack("<f", offset + size)
    patched = bytes(raw[:348]) + b"\1\0\0\0" + bytes(raw[352:offset]) + extension + bytes(raw[offset:])
    target.write_bytes(gzip.compress(patched, mtime=0))
    before, after = nib.load(source), nib.load(target)
    assert np.array_equal(np.asarray(after.dataobj), np.asarray(before.dataobj))
    assert after.header["descrip"].tobytes().rstrip(b"\0") == descrip.encode()
    assert np.allclose(after.affine, before.affine)


def build_corpus(base: Path) -> dict:
    """The planted cohort under base/MRN0048213_cohort; returns what the checks need."""
    cohort = base / f"{MRN}_cohort"
    synthesize.synthesize(cohort, synthesize.CohortSpec(subjects=6, seed=11, nifti_share=0.4), workers=2,
                          progress=False)
    truth = json.loads((cohort / "ground_truth.json").read_text())
    (cohort / "ground_truth.json").unlink()  # a real archive has no ground truth
    dicom_root, nifti_root, mask_root = cohort / "dicom", cohort / "nifti", cohort / "masks"
    values = _dicom_needles(dicom_root)
    by_uid = _dicom_files(dicom_root)
    dicom_ids = [s["series_id"] for s in truth["series"] if s["file_format"] == "dicom"]
    nifti_ids = [s["series_id"] for s in truth["series"] if s["file_format"] == "nifti"]
    values |= set(dicom_ids) | set(nifti_ids)
    own_folder = [u for u in dicom_ids if len({p.parent for p in by_uid[u]}) == 1
                  and len(list(by_uid[u][0].parent.iterdir())) == len(by_uid[u])]
    assert len(dicom_ids) >= 3 and len(nifti_ids) >= 2 and own_folder, "the synthetic cohort changed shape"
    d1 = own_folder[0]  # every tag planted, moved under a folder named after the patient: must make records
    d2 = next(u for u in dicom_ids if u != d1)  # its row gets free text in a lifestyle cell: rejected
    d3 = next(u for u in dicom_ids if u not in (d1, d2))  # copied into broken and unreported inputs
    n1, n2 = nifti_ids[:2]  # n1 renamed after the patient, header text planted: must make records
    n1_new = f"{MRN}_OBRIEN_Siobhan_T2"

    # DICOM: the planted series under dicom/SMITH_John_MRN0048213/20190312_A77812/IM0001...
    planted_dir = dicom_root / "SMITH_John_MRN0048213" / "20190312_A77812"
    planted_dir.mkdir(parents=True)
    for k, path in enumerate(sorted(by_uid[d1]), start=1):
        ds = pydicom.dcmread(path)
        _plant_tags(ds)
        ds.save_as(planted_dir / f"IM{k:04d}")
    old = by_uid[d1][0].parent
    shutil.rmtree(old)
    while old.parent != dicom_root and not any(old.parent.iterdir()):
        old = old.parent
        old.rmdir()
    template = sorted(by_uid[d3])[0]

    # A series nobody reported (no report row), in a folder named with a caret and an apostrophe.
    unreported = dicom_root / "O'BRIEN^Siobhan" / "ACC5531907"
    unreported.mkdir(parents=True)
    for k, path in enumerate(sorted(by_uid[d3])):
        ds = pydicom.dcmread(path)
        _plant_tags(ds)
        ds.PatientName = "O'BRIEN^Siobhan"
        _new_series(ds, "unreported", k)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        ds.PixelData = (ds.pixel_array.astype(np.uint16) // 2 + 1).tobytes()  # not a duplicate scan
        ds.save_as(unreported / f"IM{k + 1:04d}.dcm")

    # Broken files: a name where a number belongs (PixelSpacing 'MRN0048213\0.5'), a truncated header.
    bad = planted_dir / "bad"
    bad.mkdir()
    ds = pydicom.dcmread(template)
    _plant_tags(ds)
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8 this time
    _new_series(ds, "bad-header", 0)
    ds.PixelSpacing = ["1.00000001", "0.5"]
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    raw = buffer.getvalue()
    assert raw.count(b"1.00000001") == 1
    (bad / "IM0099").write_bytes(raw.replace(b"1.00000001", MRN.encode()))
    ds = pydicom.dcmread(template)
    _plant_tags(ds)
    ds.PatientName = "SMITH^John"
    _new_series(ds, "truncated", 0)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    raw = buffer.getvalue()
    cut = raw.index(b"SMITH^John") + len("SMITH^John") + 6  # mid-way through the next element
    (unreported.parent / "IM0001 SMITH^John truncated.dcm").write_bytes(raw[:cut])

    # Error-path names: ': ' and a name; a newline and a name; an unreadable file in an MRN folder; an
    # unreadable folder named with the MRN.
    exports = dicom_root / "exports"
    exports.mkdir()
    (exports / "Patient: MÜLLER^Hans, DOB: 19620314.dcm").write_text(
        f"PACS export note: MÜLLER^Hans {MRN} ST ELSEWHERE HOSPITAL\n")
    (exports / f"IM0007\n{NEWLINE_TAIL}").write_bytes(b"")
    locked_dir = dicom_root / f"OBRIEN^Siobhan {MRN}" / "19620314_ACC5531907"
    locked_dir.mkdir(parents=True)
    locked_file = locked_dir / "KO0001.dcm"
    locked_file.write_bytes(_without_geometry(template, "locked-file"))
    locked_folder = dicom_root / f"{MRN}_restricted"
    locked_folder.mkdir()
    (locked_folder / "SR0002.dcm").write_bytes(_without_geometry(template, "locked-folder"))

    # NIfTI: renamed after the patient with header text; a corrupt one, a duplicate and a maskless one
    # named after patients; a non-NIfTI file; a stray mask.
    _rewrite_nifti(nifti_root / f"{n1}.nii.gz", nifti_root / f"{n1_new}.nii.gz",
                   descrip=f"MÜLLER^Hans {MRN} 19620314", aux="OBRIEN^Siobhan.txt", intent=MRN,
                   comment="Referring QUIMBY^Theodora, ST ELSEWHERE HOSPITAL, 12 Harbour Road, Dunmore")
    _rewrite_nifti(mask_root / f"{n1}.nii.gz", mask_root / f"{n1_new}.nii.gz",
                   descrip="segmented by LARKIN^Rosalind", aux="SMITH^John.seg", intent="0048213",
                   comment=f"O'BRIEN^Siobhan {MRN}")
    (nifti_root / f"{n1}.nii.gz").unlink()
    (mask_root / f"{n1}.nii.gz").unlink()
    n2_bytes = (nifti_root / f"{n2}.nii.gz").read_bytes()
    (nifti_root / "MÜLLER_Hans_19620314.nii.gz").write_bytes(n2_bytes[: len(n2_bytes) // 2])
    shutil.copy(mask_root / f"{n2}.nii.gz", mask_root / "MÜLLER_Hans_19620314.nii.gz")
    (nifti_root / "SMITH_John_19620314.nii.gz").write_bytes(n2_bytes)
    shutil.copy(mask_root / f"{n2}.nii.gz", mask_root / "SMITH_John_19620314.nii.gz")
    (nifti_root / "OBRIEN_Siobhan_0048213_noseg.nii").write_bytes(gzip.decompress(n2_bytes))
    (nifti_root / "notes for MÜLLER^Hans.txt").write_text(f"{MRN} DOB 14/03/1962\n")
    shutil.copy(mask_root / f"{n2}.nii.gz", mask_root / "O'BRIEN_Siobhan_old.nii.gz")

    # reports.csv: extra columns (one named after a patient), free text in cells, rows that fail.
    with open(cohort / "reports.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0]) + ["patient_name", "dob", "referring_physician", "comments", "x__comment",
                              HEADER_NAME]
    by_series = {r["series_id"]: r for r in rows}
    values |= {r["subject_id"] for r in rows}
    for r in rows:
        r.update({"patient_name": "", "dob": "", "referring_physician": "", "comments": "", "x__comment": "",
                  HEADER_NAME: ""})
    grade = next(c for c in header if c.startswith("disc_bulge__"))
    by_series[d1].update({"subject_id": MRN, "site": "ST ELSEWHERE HOSPITAL", "patient_name": "MÜLLER^Hans",
                          "dob": "1962-03-14", "referring_physician": "QUIMBY^Theodora",
                          "comments": "Hans Müller; called 555-0199 re results, see Dr Quimby",
                          "x__comment": "MÜLLER^Hans", HEADER_NAME: "19620314"})
    by_series[d2].update({"smoking": "ex smoker, per O'BRIEN^Siobhan", "patient_name": "O'BRIEN^Siobhan",
                          "site": "ST ELSEWHERE HOSPITAL"})
    by_series[n1].update({"series_id": n1_new, "patient_name": "O'BRIEN^Siobhan", "dob": "14.03.1962",
                          "comments": f"O'Brien Siobhan {MRN}, 12 Harbour Road, Dunmore",
                          "referring_physician": "VANTERPOOL^Ignatius"})
    base_row = dict(by_series[d1])

    def extra(**cells) -> dict:
        return {**base_row, **cells}

    rows += [
        extra(series_id="MÜLLER_Hans_19620314", subject_id="MÜLLER^Hans"),  # corrupt NIfTI
        extra(series_id="SMITH_John_19620314", subject_id="SMITH^John"),  # same voxels as another scan
        extra(series_id="OBRIEN_Siobhan_0048213_noseg", subject_id="O'BRIEN^Siobhan"),  # no mask
        extra(series_id="", subject_id="MÜLLER^Hans"),
        extra(series_id="SER-MRN0048213-07", subject_id=""),
        extra(series_id="SER-SMITH-John-08", subject_id="SMITH^John", age=""),
        extra(series_id="SER-OBRIEN-Siobhan-09", subject_id="O'BRIEN^Siobhan", age="DOB 14.03.1962"),
        extra(series_id="SER-0048213-10", age="19620314"),
        extra(series_id="SER-QUIMBY-Theodora-11", sex="female (per Dr QUIMBY^Theodora)"),
        extra(series_id="SER-Hans-12", coffee="2 cups a day, says Hans MÜLLER"),
        extra(series_id="SER-MUELLER-Hans-13", **{grade: "see O'BRIEN^Siobhan"}),
        extra(series_id="DUP-MÜLLER-Hans-14", subject_id="MÜLLER^Hans"),
        extra(series_id="DUP-MÜLLER-Hans-14", subject_id="MÜLLER^Hans"),
    ]
    values |= {r["series_id"] for r in rows} | {r["subject_id"] for r in rows} | {n1_new}
    text = io.StringIO()
    writer = csv.DictWriter(text, header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    # A row with two fields too many, the extra ones identifying.
    wrong = [base_row[c] for c in header]
    wrong[0] = "SER-wrong-fields-15"
    csv.writer(text, lineterminator="\n").writerow(wrong + [f"Hans MÜLLER {MRN}", "ST ELSEWHERE HOSPITAL"])
    (cohort / "reports.csv").write_text(text.getvalue(), encoding="utf-8")
    values.add("SER-wrong-fields-15")

    values |= _dicom_needles(dicom_root)
    paths = {str(p.relative_to(cohort)) for p in cohort.rglob("*")} | {str(p) for p in cohort.rglob("*")}
    for path in [cohort, *cohort.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    locked_file.chmod(0o000)
    locked_folder.chmod(0o000)

    values |= set(PLANTED)
    for name in NAMES:
        values |= _name_parts(name)
    return {"cohort": cohort, "values": values, "paths": paths, "planted_dicom": d1, "planted_nifti": n1_new,
            "locked": [locked_file, locked_folder]}


def build_refused_cohort(base: Path) -> Path:
    """A cohort whose reports.csv names a column twice, the name being a patient's: refused as a whole."""
    cohort = base / f"{MRN}_refused"
    cohort.mkdir()
    (cohort / "reports.csv").write_text(
        "series_id,subject_id,age,MÜLLER^Hans,MÜLLER^Hans\n1.2.3,MRN0048213,57,19620314,QUIMBY^Theodora\n",
        encoding="utf-8")
    cohort.chmod(0o755)
    return cohort


# -------------------------------------------------------------------------------------------- running


@dataclasses.dataclass
class Run:
    user: str
    records: Path
    eligibility: Path
    build: subprocess.CompletedProcess | None = None
    select: subprocess.CompletedProcess | None = None
    skipped: str = ""


def _clean_env(home: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINEJAX_")}
    if home is not None:
        env["HOME"] = str(home)  # an unprivileged user's own home, as a real one has
        env.pop("MPLCONFIGDIR", None)
    return env


def _unprivileged(home: Path) -> tuple[list[str], dict, dict] | str:
    """(interpreter command, env, subprocess kwargs) that runs the stages as `nobody`, or why not."""
    if os.geteuid() != 0:
        return "not root: cannot switch to nobody"
    as_nobody = {"user": "nobody", "group": "nogroup", "extra_groups": []}
    probe = ["-c", "import data_prep.records.build_records"]
    env = _clean_env(home)
    try:
        subprocess.run([sys.executable, *probe], cwd=REPO, env=env, capture_output=True, check=True, timeout=120,
                       **as_nobody)
        return [sys.executable], env, as_nobody
    except (OSError, subprocess.CalledProcessError):
        pass
    # The interpreter may live under /root (pyenv): the system's same-version Python with this environment's
    # packages runs the same code as nobody.
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    other = shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")
    if other:
        paths = sysconfig.get_paths()
        env = {**env, "PYTHONPATH": os.pathsep.join(dict.fromkeys([paths["purelib"], paths["platlib"]]))}
        try:
            subprocess.run([other, *probe], cwd=REPO, env=env, capture_output=True, check=True, timeout=120,
                           **as_nobody)
            return [other], env, as_nobody
        except (OSError, subprocess.CalledProcessError):
            pass
    return "no Python interpreter usable by nobody"


def _grant_search(paths: list[Path]) -> list[tuple[Path, int]]:
    """Lets `nobody` reach the code and the installed packages for this test: search (not list) permission
    on the folders above each path, and list permission on the path itself (Python's importer lists the
    folders it imports from). A fresh clone made with `mktemp -d` is mode 700. Returns (folder, old mode),
    to restore."""
    granted = []
    if os.geteuid() != 0:
        return granted
    for path in paths:
        path = Path(path).resolve()
        for folder, wanted in [*((p, 0o001) for p in reversed(path.parents)), (path, 0o005)]:
            mode = folder.stat().st_mode & 0o7777
            if mode & wanted != wanted and folder.stat().st_uid == 0:
                folder.chmod(mode | wanted)
                granted.append((folder, mode))
    return granted


def _stage(interpreter: list[str], module: str, cohort: Path, out: Path, key: Path, env: dict,
           kwargs: dict) -> subprocess.CompletedProcess:
    command = [*interpreter, "-m", f"data_prep.{module}", f"--input={cohort}", f"--out={out}",
               f"--secret_file={key}"]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, errors="replace",
                          timeout=400, **kwargs)


@pytest.fixture(scope="module")
def world():
    base = Path(tempfile.mkdtemp(prefix="deid_", dir="/tmp"))
    home = Path(tempfile.mkdtemp(prefix="deid_home_", dir="/tmp"))
    corpus, granted = {}, []
    try:
        base.chmod(0o755)
        home.chmod(0o777)
        corpus = build_corpus(base)
        refused = build_refused_cohort(base)
        key = base / "secret.key"
        key.write_text(SECRET + "\n")
        key.chmod(0o644)
        runs = {"root": Run("root", base / "root" / "records", base / "root" / "eligibility"),
                "nobody": Run("nobody", base / "nobody" / "records", base / "nobody" / "eligibility")}
        (base / "root").mkdir(mode=0o755)
        (base / "nobody").mkdir()
        (base / "nobody").chmod(0o777)
        (base / "refused").mkdir(mode=0o755)
        before = set(corpus["cohort"].rglob("*"))
        granted = _grant_search([REPO, Path(sysconfig.get_paths()["purelib"])])
        unprivileged = _unprivileged(home)
        if isinstance(unprivileged, str):
            runs["nobody"].skipped = unprivileged
        root = ([sys.executable], _clean_env(), {})
        jobs = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
            # Longest first: eligibility (UMAP, HDBSCAN) takes most of the time.
            for user, launcher in (("root", root), ("nobody", unprivileged)):
                if not runs[user].skipped:
                    jobs[(user, "select")] = pool.submit(_stage, launcher[0], "eligibility", corpus["cohort"],
                                                         runs[user].eligibility, key, launcher[1], launcher[2])
            for user, launcher in (("root", root), ("nobody", unprivileged)):
                if not runs[user].skipped:
                    jobs[(user, "build")] = pool.submit(_stage, launcher[0], "build_records", corpus["cohort"],
                                                        runs[user].records, key, launcher[1], launcher[2])
            for module in ("build_records", "eligibility"):
                jobs[("refused", module)] = pool.submit(_stage, *root[:1], module, refused,
                                                        base / "refused" / module, key, root[1], root[2])
        for (user, what), job in jobs.items():
            if user == "refused":
                continue
            setattr(runs[user], what, job.result())
        refusals = {module: jobs[("refused", module)].result() for module in ("build_records", "eligibility")}
        written = sorted(p for p in set(corpus["cohort"].rglob("*")) - before if p.is_file())
        yield {"base": base, "home": home, "key": key, "corpus": corpus, "runs": runs, "refusals": refusals,
               "needles": _needles(corpus["values"]), "written_in_cohort": written}
    finally:
        for path, mode in reversed(granted):
            path.chmod(mode)
        for path in corpus.get("locked", []):
            if path.exists():
                path.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def _run(world, user: str) -> Run:
    run = world["runs"][user]
    if run.skipped:
        # Only a non-root developer cannot switch to nobody; as root (CI) the run must happen.
        assert os.geteuid() != 0, f"the unprivileged run did not happen: {run.skipped}"
        pytest.skip(f"unprivileged run needs root to switch to nobody: {run.skipped}")
    return run


def _describe(done: subprocess.CompletedProcess) -> str:
    return f"exit {done.returncode}\nstdout (end):\n{done.stdout[-3000:]}\nstderr (end):\n{done.stderr[-3000:]}"


# ------------------------------------------------------------------------------------------- scanning


def _png_text(data: bytes) -> list[bytes]:
    """Text of a PNG's tEXt, zTXt, iTXt and eXIf chunks (zTXt/iTXt may be compressed)."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        try:
            if kind == b"tEXt" or kind == b"eXIf":
                out.append(body)
            elif kind == b"zTXt":
                keyword, _, rest = body.partition(b"\0")
                out.append(keyword + b"\n" + zlib.decompress(rest[1:]))
            elif kind == b"iTXt":
                keyword, _, rest = body.partition(b"\0")
                compressed, rest = rest[0], rest[2:]
                language, _, rest = rest.partition(b"\0")
                translated, _, text = rest.partition(b"\0")
                out.append(b"\n".join([keyword, language, translated,
                                       zlib.decompress(text) if compressed else text]))
        except zlib.error:
            out.append(body)
        pos += 12 + length
    return out


def _is_text(data: bytes) -> bool:
    if b"\0" in data[:65536]:
        return False
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _blobs(path: Path, rel: str):
    """(where, bytes, is_text) for everything one output file holds, decoded where it is a container."""
    from array_record.python.array_record_module import ArrayRecordReader

    from spinejax import records

    yield "file name", rel.encode("utf-8", "surrogateescape"), True
    data = path.read_bytes()
    text = path.suffix.lower() in TEXT_SUFFIXES or _is_text(data)
    yield "bytes", data, text
    if data[:2] == b"\x1f\x8b":
        try:
            inner = gzip.decompress(data)
            yield "gunzipped", inner, _is_text(inner)
        except (OSError, EOFError):
            pass
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                inner = archive.read(member)
                yield f"zip member {member}", member.encode() + b"\n" + inner, _is_text(inner)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        for n, chunk in enumerate(_png_text(data)):
            yield f"PNG text chunk {n}", chunk, True
    if path.name.endswith(".array_record"):
        reader = ArrayRecordReader(str(path))
        try:
            for i in range(reader.num_records()):
                record = reader.read([i])[0]
                if record not in data:  # stored compressed: its bytes were not searched yet
                    yield f"record {i}", record, False
                if record[:4] == records.MAGIC:
                    (length,) = struct.unpack("<I", record[4:8])
                    header = record[8:8 + length]
                    yield f"record {i} header", header, True
                    # Parsed, so that text the JSON escapes (\u00dc) is searched as text too.
                    parsed = json.dumps(json.loads(header), ensure_ascii=False).encode()
                    yield f"record {i} header, parsed", parsed, True
                    fields = records.decode(record)  # as the input pipeline reads it
                    scalars = {k: v for k, v in fields.items() if not isinstance(v, np.ndarray)}
                    yield f"record {i} fields", json.dumps(scalars, ensure_ascii=False, default=str).encode(), True
                else:
                    yield f"record {i} (not a spinejax record)", record, _is_text(record)
        finally:
            reader.close()


def _bounded(data: bytes, at: int, size: int) -> bool:
    before = data[at - 1:at] if at else b""
    after = data[at + size:at + size + 1]
    return not (before.isalnum() or after.isalnum())


_WIDE_TEXT = re.compile(rb"(?:[\x20-\xff]\x00){5}")


def _search(data: bytes, is_text: bool, needles: list[Needle]) -> list[tuple[str, bytes, int]]:
    lowered = data.lower()
    # UTF-16 spellings only where UTF-16 text could be: a run of characters each followed by a zero byte.
    wide = is_text or _WIDE_TEXT.search(lowered) is not None
    hits = []
    for needle in needles:
        if (needle.short or needle.text_only) and not is_text:
            continue
        for pattern in needle.patterns:
            if not wide and b"\0" in pattern:
                continue
            start, at = 0, -1
            while (at := lowered.find(pattern, start)) >= 0:
                if not needle.short or _bounded(lowered, at, len(pattern)):
                    break
                start = at + 1
            if at >= 0:
                hits.append((needle.label, pattern, at))
                break
    return hits


def _scan(world, roots: list[Path], needles: list[Needle]) -> tuple[list[str], int]:
    """Hits of `needles` in every file under `roots` (and inside its containers); (hits, files scanned)."""
    found, n_files = [], 0
    for root in roots:
        if not root.exists():
            continue
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            n_files += 1
            rel = str(path.relative_to(world["base"]))
            for where, data, is_text in _blobs(path, rel):
                for label, pattern, at in _search(data, is_text, needles):
                    context = data[max(0, at - 40):at + len(pattern) + 40]
                    found.append(f"{rel} [{where}]: {label!r} (as {pattern!r}) in ...{context!r}...")
    return found, n_files


def _outputs(world, user: str) -> list[Path]:
    """Everything the user's run wrote: its output folders and anything beside them (partials, locks), and
    whatever a run left in the cohort folder."""
    return [world["base"] / user, *world["written_in_cohort"]]


def _report(hits: list[str], what: str) -> str:
    return f"{len(hits)} {what}:\n" + "\n".join(hits[:60]) + ("\n..." if len(hits) > 60 else "")


# ---------------------------------------------------------------------------------------------- tests


USERS = ("root", "nobody")


@pytest.mark.parametrize("user", USERS)
def test_both_stages_finish_without_traceback(world, user):
    run = _run(world, user)
    for done in (run.build, run.select):
        assert "Traceback" not in done.stdout + done.stderr, _describe(done)
        assert done.returncode == 0, _describe(done)
    assert (run.records / "manifest.json").is_file() and (run.eligibility / "summary.json").is_file()


@pytest.mark.parametrize("user", USERS)
def test_the_planted_inputs_were_exercised(world, user):
    """Not vacuous: the planted DICOM and NIfTI series made records, the broken inputs made failures, the
    broken rows rejections, and only the unprivileged user met a permission error."""
    import pandas as pd

    from spinejax.cohort import pseudonym

    run = _run(world, user)
    secret = SECRET.encode()
    index = pd.read_csv(run.records / "index.csv", dtype=str, keep_default_na=False)
    for series_id in (world["corpus"]["planted_dicom"], world["corpus"]["planted_nifti"]):
        assert pseudonym.series_key(series_id, secret) in set(index["series_key"]), series_id
    assert pseudonym.subject_key(MRN, secret) in set(index["subject_key"])
    failures = pd.read_csv(run.records / "failures.csv", dtype=str, keep_default_na=False)
    rejections = pd.read_csv(run.records / "rejections.csv", dtype=str, keep_default_na=False)
    codes = Counter(failures["code"])
    for code in ("not_dicom", "bad_dicom_header", "no_report_row", "report_row_rejected", "unreadable_scan",
                 "not_nifti"):
        assert codes[code] >= 1, (code, dict(codes))
    assert (codes["unreadable_file"] >= 1) == (user == "nobody"), dict(codes)
    assert {"missing_series_id", "missing_subject_id", "missing_age", "bad_age", "age_out_of_range",
            "bad_sex", "bad_value", "bad_grade", "duplicate_series_id", "wrong_field_count"} <= set(
        rejections["code"]), sorted(set(rejections["code"]))
    eligibility = pd.read_csv(run.eligibility / "eligibility.csv", dtype=str, keep_default_na=False)
    assert (eligibility["cluster"] == "-2").sum() >= 8


@pytest.mark.parametrize("user", USERS)
def test_no_planted_value_in_any_output(world, user):
    """Every byte of every file written (decoded records, PNG text, archives included) and every file name."""
    _run(world, user)
    hits, n_files = _scan(world, _outputs(world, user), world["needles"])
    assert n_files >= 10
    assert not hits, _report(hits, f"planted values found in the {user} run's outputs")


@pytest.mark.parametrize("user", USERS)
def test_no_secret_and_no_absolute_path_in_any_output(world, user):
    run = _run(world, user)
    values = {SECRET, SECRET[:20], SECRET[-20:], str(world["base"]), world["base"].name, str(world["key"]),
              str(world["corpus"]["cohort"]), str(run.records), str(run.eligibility), str(world["home"]),
              world["home"].name}
    hits, _ = _scan(world, _outputs(world, user), _needles(values))
    assert not hits, _report(hits, f"secrets or absolute paths found in the {user} run's outputs")


@pytest.mark.parametrize("user", USERS)
def test_no_id_or_path_under_an_unkeyed_hash(world, user):
    """Ids, names and input paths appear neither hashed without a key nor keyed with an empty secret."""
    _run(world, user)
    needles = _unkeyed_hashes(world["corpus"]["values"] | world["corpus"]["paths"])
    hits, _ = _scan(world, _outputs(world, user), needles)
    assert not hits, _report(hits, f"unkeyed hashes of planted values found in the {user} run's outputs")


@pytest.mark.parametrize("module", ("build_records", "eligibility"))
def test_a_refused_table_is_one_error_line_without_its_header_values(world, module):
    """reports.csv naming a column twice (the name a patient's) is refused before any work: exit 2, one line
    `error: ...` on stderr, no traceback, no header or cell value, no path."""
    done = world["refusals"][module]
    assert done.returncode == 2, _describe(done)
    assert "Traceback" not in done.stdout + done.stderr, _describe(done)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), _describe(done)
    values = _name_parts("MÜLLER^Hans") | _name_parts("QUIMBY^Theodora") | {
        MRN, "19620314", str(world["base"]), world["base"].name, f"{MRN}_refused"}
    hits = _search(lines[0].encode(), True, _needles(values))
    assert not hits, f"the error line holds {hits}: {lines[0]}"
    assert not (world["base"] / "refused" / module).exists() or not any(
        (world["base"] / "refused" / module).iterdir()), "a refused run wrote outputs"


def _problem_lines(text: str) -> dict[str, int]:
    """How many console lines name each reason code."""
    counts = Counter()
    for line in text.splitlines():
        for code in ALL_CODES:
            if re.search(rf"(?<![a-z_]){code}(?![a-z_])", line):
                counts[code] += 1
    return counts


@pytest.mark.parametrize("user", USERS)
def test_console_says_each_problem_on_one_line(world, user):
    """Every failure and rejection has its console line naming its code; no name spills onto a line of its
    own (a file name holding a newline was planted); no traceback."""
    import pandas as pd

    run = _run(world, user)
    text = run.build.stdout + run.build.stderr
    assert "Traceback" not in text, _describe(run.build)
    failures = pd.read_csv(run.records / "failures.csv", dtype=str, keep_default_na=False)
    rejections = pd.read_csv(run.records / "rejections.csv", dtype=str, keep_default_na=False)
    expected = Counter(failures["code"]) + Counter(rejections["code"])
    said = _problem_lines(text)
    wrong = {c: (said[c], expected[c]) for c in set(said) | set(expected) if said[c] != expected[c]}
    assert not wrong, f"console lines vs problems per code (lines, problems): {wrong}\n{_describe(run.build)}"
    assert not any(line.lstrip().startswith(NEWLINE_TAIL) for line in text.splitlines()), _describe(run.build)
    select = run.select.stdout + run.select.stderr
    assert "Traceback" not in select, _describe(run.select)
    assert not any(line.lstrip().startswith(NEWLINE_TAIL) for line in select.splitlines())
