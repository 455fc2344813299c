"""A hospital archive's bad and unusual inputs, derived from a small synthetic cohort, for the ingestion corpus.

Each kind is one function that writes its files into the corpus folder (its own series id, folder or file
name, so kinds never share an input), adds its reports.csv rows, and returns the checks of its expected
outcome under the ingestion contract, docs/ingestion.md:

    processed       the series' records are in index.csv, keyed spinejax.cohort.pseudonym.series_key(series_id, SECRET)
    not_processed   no record carries the series id
    refused         entries of manifest["outcomes"] (by series id or by path under the cohort) with the code
    not_refused     no entry of manifest["outcomes"] names the series id
    rejected        an entry of manifest["rejections"] (by reports.csv line) with the code
    row_used        the reports.csv line is not rejected
    custom          a function of the built result

Kinds are registered in file order in `KINDS` (name -> (expected outcome in words, function)), so the test
can parametrise over them before anything is built. Scans that must be processed carry pixel noise of
their own, so that no two inputs hold identical voxels (which would be `duplicate_scan`).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import gzip
import io
import json
import os
import shutil
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom.data
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag

from configs import records as records_config
from data_prep.phantom import writers

GRADE_COLUMN = "disc_bulge__L4-L5"
COMMENT_COLUMN = "x__comment"
COMMENT_NEEDLE = "Corpusname-Xylophone"  # free text that must never reach an output
LUMBAR_LABELS = (41, 42, 43, 44, 45, 92, 93, 94, 95, 100, 50)
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(4070)  # macOS "._X" resource fork
MIN_SLICES = int(records_config.get_config().get("min_slices", 8))


@dataclasses.dataclass(frozen=True)
class Check:
    what: str  # processed | not_processed | not_refused | refused | rejected | row_used | custom
    series_id: str | None = None
    where: str | None = None  # path relative to the cohort: the file, or a folder holding the input's files
    codes: tuple[str, ...] = ()
    kind: str | None = None  # outcome kind: file | dicom | nifti
    region: str = ""
    absent: bool = True  # refused, region "": no record carries this series id
    count: int | None = None  # refused: exactly this many matching outcomes (None: at least one)
    line: int | None = None
    column: str | None = None
    age: float | None = None
    subject_id: str | None = None
    regions: tuple[str, ...] | None = None  # processed: regions that must have records (None: all)
    no_regions: tuple[str, ...] = ()  # processed: regions that must not have records
    func: Callable | None = None


def processed(series_id: str, **kw) -> Check:
    return Check("processed", series_id=series_id, **kw)


def refused(codes: str | tuple[str, ...], **kw) -> Check:
    return Check("refused", codes=(codes,) if isinstance(codes, str) else tuple(codes), **kw)


def rejected(codes: str | tuple[str, ...], line: int, **kw) -> Check:
    return Check("rejected", codes=(codes,) if isinstance(codes, str) else tuple(codes), line=line, **kw)


KINDS: dict[str, tuple[str, Callable]] = {}


def kind(name: str, expected: str):
    def register(function):
        assert name not in KINDS, name
        KINDS[name] = (expected, function)
        return function
    return register


# --------------------------------------------------------------------------------------------- helpers


def _save_dicom(ds: Dataset, path: Path) -> None:
    buffer = pydicom.filebase.DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())


def _set_raw(ds: Dataset, tag: int, vr: str, text: str) -> None:
    """Puts `text` into element `tag` as written bytes, bypassing pydicom's value checks (a broken writer)."""
    value = text.encode("latin-1")
    if len(value) % 2:
        value += b" "
    ds._dict[Tag(tag)] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def _orientation(ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    row, col = iop[:3], iop[3:]
    return row, col, np.cross(row, col)


def _ds(values) -> list[str]:
    return [f"{v:.6f}" for v in values]


def _nifti_bytes(data: np.ndarray, affine: np.ndarray, slope: float = 1.0, inter: float = 0.0,
                 gz: bool = True) -> bytes:
    image = nib.Nifti1Image(data, affine)
    image.header.set_data_dtype(data.dtype)
    image.header.set_slope_inter(slope, inter)
    image.header.set_xyzt_units("mm", "sec")
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    raw = image.to_bytes()
    return gzip.compress(raw, compresslevel=1, mtime=0) if gz else raw


def _patch_header(path: Path, **fields) -> None:
    """Sets NIfTI-1 header fields in place (pixdim as {'pixdim1': 0.0} for one element)."""
    raw = path.read_bytes()
    gz = raw[:2] == b"\x1f\x8b"
    if gz:
        raw = gzip.decompress(raw)
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw[:348]), check=False)
    for name, value in fields.items():
        if name.startswith("pixdim"):
            header["pixdim"][int(name[-1])] = value
        else:
            header[name] = value
    raw = header.binaryblock + raw[348:]
    path.write_bytes(gzip.compress(raw, compresslevel=1, mtime=0) if gz else raw)


class Corpus:
    """The corpus folder being written: the synthetic cohort plus every kind's inputs and rows."""

    def __init__(self, root: Path):
        self.root = root
        truth = json.loads((root / "ground_truth.json").read_text())
        self.dicom_ids = sorted(s["series_id"] for s in truth["series"] if s["file_format"] == "dicom")
        self.nifti_ids = sorted(s["series_id"] for s in truth["series"] if s["file_format"] == "nifti")
        self.good_ids = self.dicom_ids + self.nifti_ids
        assert len(self.dicom_ids) >= 5 and len(self.nifti_ids) >= 3, "the cohort needs both formats"
        with open(root / "reports.csv", newline="", encoding="utf-8") as f:
            header, *rows = list(csv.reader(f))
        self.header = header + [COMMENT_COLUMN]
        self.col = {name: n for n, name in enumerate(self.header)}
        self.rows = [r + [""] for r in rows]
        self.template = list(self.rows[0])
        # DICOM files of every series, in slice order (position along the normal).
        self.files: dict[str, list[Path]] = {}
        self.syntax: dict[str, str] = {}
        for path in sorted(p for p in (root / "dicom").rglob("*") if p.is_file()):
            header_ds = pydicom.dcmread(path, stop_before_pixels=True)
            self.files.setdefault(str(header_ds.SeriesInstanceUID), []).append(path)
            self.syntax[str(header_ds.SeriesInstanceUID)] = header_ds.file_meta.TransferSyntaxUID
        for uid, paths in self.files.items():
            heads = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
            normal = _orientation(heads[0])[2]
            order = np.argsort([np.dot([float(v) for v in h.ImagePositionPatient], normal) for h in heads])
            self.files[uid] = [paths[i] for i in order]
        # Copies are made from an uncompressed DICOM series and from the first NIfTI scan.
        self.base = next(u for u in self.dicom_ids if self.syntax[u] == pydicom.uid.ExplicitVRLittleEndian)
        self.nifti_base = self.nifti_ids[0]
        scan = nib.load(root / "nifti" / f"{self.nifti_base}.nii.gz")
        self.scan_raw = np.asarray(scan.dataobj.get_unscaled())
        self.scan_affine = scan.affine.copy()
        slope, inter = scan.header.get_slope_inter()
        self.scan_slope_inter = (1.0 if slope is None else slope, 0.0 if inter is None else inter)
        mask = nib.load(root / "masks" / f"{self.nifti_base}.nii.gz")
        self.mask_raw = np.asarray(mask.dataobj)
        self._seed = 1000

    # ----- bookkeeping
    def seed(self) -> int:
        self._seed += 1
        return self._seed

    def uid(self, name: str) -> str:
        return writers.make_uid("corpus", name)

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def write(self, rel: str, data: bytes) -> str:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return rel

    def row(self, series_id: str, subject_id: str | None = None, cells: dict | None = None) -> int:
        """Appends a row made from a good row; returns its 1-based line in reports.csv (header = 1)."""
        fields = list(self.template)
        fields[self.col["series_id"]] = series_id
        fields[self.col["subject_id"]] = f"CXS-{series_id.strip()}" if subject_id is None else subject_id
        for name, value in (cells or {}).items():
            fields[self.col[name]] = value
        self.rows.append(fields)
        return len(self.rows) + 1

    def raw_row(self, fields: list[str]) -> int:
        self.rows.append(list(fields))
        return len(self.rows) + 1

    def write_reports(self) -> None:
        with open(self.root / "reports.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f, lineterminator="\r\n").writerows([self.header, *self.rows])  # Excel line ends

    # ----- DICOM
    def derived(self, name: str, select=None, source: str | None = None) -> list[tuple[int, Dataset]]:
        """Copies of the base series' slices (index k in slice order) under a new SeriesInstanceUID and new
        SOPInstanceUIDs, with pixel noise of their own."""
        uid = self.uid(name)
        files = self.files[source or self.base]
        rng = np.random.default_rng(self.seed())
        out = []
        for k in range(len(files)) if select is None else select:
            ds = pydicom.dcmread(files[k])
            ds.SeriesInstanceUID = uid
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = writers.make_uid("corpus-sop", name, k)
            pixels = ds.pixel_array.astype(np.int32) + rng.integers(0, 3, ds.pixel_array.shape)
            ds.PixelData = np.clip(pixels, 0, 65535).astype(np.uint16).tobytes()
            out.append((k, ds))
        return out

    def dicom_series(self, name: str, edit=None, select=None, folder: str | None = None, row: bool = True,
                     mask: bool = True, row_cells: dict | None = None) -> tuple[str, list[Path]]:
        """A derived series written to dicom/corpus/<name>/IMnnnn, with its mask and reports row."""
        uid = self.uid(name)
        target = self.root / (folder or f"dicom/corpus/{name}")
        n = len(self.files[self.base])
        paths = []
        for k, ds in self.derived(name, select):
            if edit is not None:
                edit(ds, k, n)
            path = target / f"IM{k + 1:04d}"
            _save_dicom(ds, path)
            paths.append(path)
        if mask:
            shutil.copy(self.root / "masks" / f"{self.base}.nii.gz", self.root / "masks" / f"{uid}.nii.gz")
        if row:
            self.row(uid, cells=row_cells)
        return uid, paths

    def single_file(self, name: str, edit) -> str:
        """One slice of the base series as a series of its own in dicom/corpus/<name>/; returns that folder."""
        n = len(self.files[self.base])
        (k, ds), = self.derived(name, [n // 2])
        edit(ds)
        _save_dicom(ds, self.root / "dicom" / "corpus" / name / "IM0001")
        return f"dicom/corpus/{name}"

    def new_dataset(self, name: str, sop_class: str, modality: str) -> Dataset:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = writers.make_uid("corpus-sop", name)
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.PatientName, ds.PatientID = "CORPUS^PATIENT", "CORPUS-MRN"
        ds.StudyInstanceUID = writers.make_uid("corpus-study", name)
        ds.SeriesInstanceUID = self.uid(name)
        ds.SeriesNumber, ds.InstanceNumber = 99, 1
        ds.StudyDate, ds.StudyTime = "20230401", "101500"
        return ds

    # ----- NIfTI
    def noisy_scan(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed())
        noisy = self.scan_raw.astype(np.int32) + rng.integers(0, 3, self.scan_raw.shape)
        return np.clip(noisy, 0, 65535).astype(self.scan_raw.dtype)

    def nifti(self, series_id: str, rel: str | None = None, data: np.ndarray | None = None,
              affine: np.ndarray | None = None, mask: str | bool = True, row: bool = True,
              row_cells: dict | None = None, subject_id: str | None = None, gz: bool = True) -> str:
        """A scan of the base NIfTI's grid (noisy copy unless `data`) as nifti/<series_id>.nii.gz (or `rel`),
        its mask copied to masks/<series_id>.nii.gz (or to the path `mask`), and a reports row."""
        rel = rel or f"nifti/{series_id}.nii{'.gz' if gz else ''}"
        data = self.noisy_scan() if data is None else data
        slope, inter = self.scan_slope_inter if data.dtype == self.scan_raw.dtype else (1.0, 0.0)
        self.write(rel, _nifti_bytes(data, self.scan_affine if affine is None else affine, slope, inter,
                                     gz=rel.lower().endswith(".gz")))
        if mask:
            mask_rel = mask if isinstance(mask, str) else f"masks/{series_id}.nii.gz"
            self.write(mask_rel, _nifti_bytes(self.mask_raw, self.scan_affine, gz=mask_rel.endswith(".gz")))
        if row:
            self.row(series_id, subject_id=subject_id, cells=row_cells)
        return rel

    def tiny_nifti(self, series_id: str) -> str:
        """A small scan and mask of its own (for inputs whose reports row decides their outcome)."""
        rng = np.random.default_rng(self.seed())
        affine = np.diag([4.0, 4.0, 4.0, 1.0])
        self.write(f"nifti/{series_id}.nii.gz",
                   _nifti_bytes(rng.integers(0, 1000, (8, 8, 8)).astype(np.uint16), affine))
        labels = np.zeros((8, 8, 8), np.uint8)
        labels[3:5, 2:6, 3:5] = 43
        self.write(f"masks/{series_id}.nii.gz", _nifti_bytes(labels, affine))
        return f"nifti/{series_id}.nii.gz"


def build_corpus(root: Path) -> dict[str, list[Check] | None]:
    """Writes every kind into the cohort folder `root` (a copy of a synthetic cohort) and reports.csv;
    returns kind -> checks (None: the kind cannot be made on this machine)."""
    corpus = Corpus(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom and nibabel warn about what these kinds break on purpose
        checks = {name: function(corpus) for name, (_, function) in KINDS.items()}
    corpus.write_reports()
    return checks


# --------------------------------------------------------------------------------------------- the kinds

@kind("clean_cohort", "processed: every synthetic DICOM and NIfTI series")
def _clean(c: Corpus):
    return [processed(s) for s in c.good_ids]


# ----- files in dicom/ that are not DICOM images

@kind("empty_file", "refused not_dicom (file)")
def _empty(c):
    return [refused("not_dicom", where=c.write("dicom/junk/IM0000", b""), kind="file", count=1)]


@kind("text_file_in_dicom", "refused not_dicom (file)")
def _text(c):
    return [refused("not_dicom", where=c.write("dicom/junk/readme.txt", b"Exported by PACS on 01.04.2023\r\n"),
                    kind="file", count=1)]


@kind("ds_store_in_dicom", "refused not_dicom (file)")
def _ds_store_dicom(c):
    return [refused("not_dicom", where=c.write("dicom/.DS_Store", b"\x00\x00\x00\x01Bud1" + bytes(2042)),
                    kind="file", count=1)]


@kind("zip_archive_in_dicom", "refused not_dicom (file)")
def _zip(c):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(c.files[c.base][0], "IM0001")
    return [refused("not_dicom", where=c.write("dicom/junk/export.zip", buffer.getvalue()), kind="file", count=1)]


@kind("gzipped_dicom", "refused not_dicom (file; pydicom's zipMR.gz)")
def _gz(c):
    data = Path(pydicom.data.get_testdata_file("zipMR.gz")).read_bytes()
    return [refused("not_dicom", where=c.write("dicom/junk/zipMR.gz", data), kind="file", count=1)]


@kind("truncated_preamble", "refused not_dicom (file cut inside the 128-byte preamble)")
def _preamble(c):
    data = c.files[c.base][0].read_bytes()[:100]
    return [refused("not_dicom", where=c.write("dicom/junk/IM_cut_preamble", data), kind="file", count=1)]


@kind("dangling_symlink", "refused unreadable_file (a link to a file that is gone)")
def _dangling(c):
    link = c.root / "dicom" / "junk" / "IM_link_to_nowhere"
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink("../missing_study/IM9999", link)
    return [refused("unreadable_file", where=c.rel(link), kind="file", count=1)]


# A file the user running spinejax may not read (mode 000) is a kind of tests/test_deidentification.py, which
# runs the stages as an unprivileged user: as root (CI) every file is readable.


# ----- DICOM objects without image geometry, or with unusable header values

@kind("dicomdir", "refused no_image_geometry (file; pydicom's DICOMDIR at the export root)")
def _dicomdir(c):
    data = Path(pydicom.data.get_testdata_file("DICOMDIR")).read_bytes()
    return [refused("no_image_geometry", where=c.write("dicom/DICOMDIR", data), kind="file", count=1)]


@kind("structured_report", "refused no_image_geometry (file; pydicom's test-SR.dcm)")
def _sr(c):
    data = Path(pydicom.data.get_testdata_file("test-SR.dcm")).read_bytes()
    return [refused("no_image_geometry", where=c.write("dicom/corpus/sr/SR0001.dcm", data), kind="file", count=1)]


@kind("presentation_state", "refused no_image_geometry (file; a grayscale softcopy presentation state)")
def _gsps(c):
    ds = c.new_dataset("presentation_state", "1.2.840.10008.5.1.4.1.1.11.1", "PR")
    ds.ContentLabel, ds.PresentationCreationDate = "ANNOTATION", "20230401"
    referenced = Dataset()
    referenced.SeriesInstanceUID = c.base
    ds.ReferencedSeriesSequence = [referenced]
    _save_dicom(ds, c.root / "dicom" / "corpus" / "presentation_state" / "PR0001")
    return [refused("no_image_geometry", where="dicom/corpus/presentation_state", kind="file", count=1)]


@kind("rows_deleted", "refused no_image_geometry (file; an MR slice without Rows)")
def _rows(c):
    def edit(ds):
        del ds.Rows
    return [refused("no_image_geometry", where=c.single_file("rows_deleted", edit), kind="file", count=1)]


@kind("pixel_spacing_missing", "refused no_image_geometry (file; an MR slice without PixelSpacing)")
def _spacing_missing(c):
    def edit(ds):
        del ds.PixelSpacing
    return [refused("no_image_geometry", where=c.single_file("pixel_spacing_missing", edit), kind="file", count=1)]


@kind("truncated_header", "refused bad_dicom_header (file cut after 900 bytes, inside the header)")
def _truncated_header(c):
    folder = c.single_file("truncated_header", lambda ds: None)
    path = c.root / folder / "IM0001"
    path.write_bytes(path.read_bytes()[:900])
    return [refused("bad_dicom_header", where=folder, kind="file", count=1)]


@kind("orientation_text", "refused bad_dicom_header (file; ImageOrientationPatient holds text)")
def _iop_text(c):
    folder = c.single_file("orientation_text", lambda ds: _set_raw(ds, 0x00200037, "DS", "SAG\\0\\0\\0\\0\\-1"))
    return [refused("bad_dicom_header", where=folder, kind="file", count=1)]


@kind("orientation_five_values", "refused bad_dicom_header (file; ImageOrientationPatient with 5 values)")
def _iop_five(c):
    def edit(ds):
        ds.ImageOrientationPatient = list(ds.ImageOrientationPatient)[:5]
    return [refused("bad_dicom_header", where=c.single_file("orientation_five_values", edit), kind="file", count=1)]


@kind("position_text", "refused bad_dicom_header (file; ImagePositionPatient holds 'n/a')")
def _ipp_text(c):
    folder = c.single_file("position_text", lambda ds: _set_raw(ds, 0x00200032, "DS", "-12.5\\n/a\\100"))
    return [refused("bad_dicom_header", where=folder, kind="file", count=1)]


@kind("pixel_spacing_with_units", "refused bad_dicom_header (file; PixelSpacing '1.3mm\\1.3mm')")
def _spacing_text(c):
    folder = c.single_file("pixel_spacing_with_units", lambda ds: _set_raw(ds, 0x00280030, "DS", "1.3mm\\1.3mm"))
    return [refused("bad_dicom_header", where=folder, kind="file", count=1)]


@kind("rescale_slope_decimal_comma", "refused bad_dicom_header (file; RescaleSlope '1,5')")
def _slope_text(c):
    folder = c.single_file("rescale_slope_decimal_comma", lambda ds: _set_raw(ds, 0x00281053, "DS", "1,5"))
    return [refused("bad_dicom_header", where=folder, kind="file", count=1)]


@kind("zero_pixel_spacing", "refused bad_orientation (file; PixelSpacing 0\\0)")
def _zero_spacing(c):
    def edit(ds):
        ds.PixelSpacing = ["0", "0"]
    return [refused("bad_orientation", where=c.single_file("zero_pixel_spacing", edit), kind="file", count=1)]


@kind("siemens_mosaic", "refused siemens_mosaic (file; ImageType with MOSAIC, Siemens private header)")
def _mosaic(c):
    def edit(ds):
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
        ds.Manufacturer = "SIEMENS"
        ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0A, "US", 16)
    return [refused("siemens_mosaic", where=c.single_file("siemens_mosaic", edit), kind="file", count=1)]


@kind("secondary_capture_screenshot", "refused no_image_geometry (file; an RGB secondary capture key image)")
def _secondary_capture(c):
    ds = c.new_dataset("secondary_capture_screenshot", "1.2.840.10008.5.1.4.1.1.7", "OT")
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 64, 64, 3, "RGB"
    ds.PlanarConfiguration, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 0, 8, 8, 7, 0
    ds.PixelData = np.random.default_rng(c.seed()).integers(0, 255, (64, 64, 3)).astype(np.uint8).tobytes()
    _save_dicom(ds, c.root / "dicom" / "corpus" / "secondary_capture_screenshot" / "SC0001")
    return [refused("no_image_geometry", where="dicom/corpus/secondary_capture_screenshot", kind="file", count=1)]


@kind("appledouble_in_dicom", "refused not_dicom (macOS '._IMnnnn' resource fork next to a slice)")
def _apple_dicom(c):
    source = c.files[c.base][0]
    return [refused("not_dicom", where=c.write(c.rel(source.with_name("._" + source.name)), APPLEDOUBLE),
                    kind="file", count=1)]


@kind("multiframe_without_geometry", "refused no_frame_geometry (file; emri_small-like MR, 8 frames, no geometry)")
def _emri(c):
    ds = c.new_dataset("multiframe_without_geometry", pydicom.uid.MRImageStorage, "MR")
    ds.NumberOfFrames, ds.Rows, ds.Columns = 8, 64, 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.random.default_rng(c.seed()).integers(0, 4000, (8, 64, 64)).astype(np.uint16).tobytes()
    _save_dicom(ds, c.root / "dicom" / "corpus" / "multiframe_without_geometry" / "MF0001.dcm")
    return [refused("no_frame_geometry", where="dicom/corpus/multiframe_without_geometry", kind="file", count=1)]


def _enhanced(c: Corpus, name: str):
    import highdicom

    datasets = [ds for _, ds in c.derived(name)]
    return highdicom.legacy.LegacyConvertedEnhancedMRImage(
        legacy_datasets=datasets, series_instance_uid=c.uid(name), series_number=99,
        sop_instance_uid=writers.make_uid("corpus-sop", name), instance_number=1)


@kind("enhanced_multiframe", "processed (Legacy Converted Enhanced MR: one file, per-frame geometry)")
def _enhanced_ok(c):
    image = _enhanced(c, "enhanced_multiframe")
    _save_dicom(image, c.root / "dicom" / "corpus" / "enhanced_multiframe" / "MF0001.dcm")
    uid = c.uid("enhanced_multiframe")
    shutil.copy(c.root / "masks" / f"{c.base}.nii.gz", c.root / "masks" / f"{uid}.nii.gz")
    c.row(uid)
    return [processed(uid)]


@kind("enhanced_frames_shuffled", "processed (Enhanced MR whose frames are stored out of spatial order)")
def _enhanced_shuffled(c):
    name = "enhanced_frames_shuffled"
    image = _enhanced(c, name)
    n = int(image.NumberOfFrames)
    order = np.random.default_rng(c.seed()).permutation(n)
    frames = np.frombuffer(image.PixelData, "<u2").reshape(n, image.Rows, image.Columns)
    image.PixelData = np.ascontiguousarray(frames[order]).tobytes()
    items = list(image.PerFrameFunctionalGroupsSequence)
    image.PerFrameFunctionalGroupsSequence = [items[i] for i in order]
    _save_dicom(image, c.root / "dicom" / "corpus" / name / "MF0001.dcm")
    shutil.copy(c.root / "masks" / f"{c.base}.nii.gz", c.root / "masks" / f"{c.uid(name)}.nii.gz")
    c.row(c.uid(name))
    return [processed(c.uid(name))]


@kind("multiframe_positions_stripped", "refused no_frame_geometry (file; enhanced MR without PlanePositionSequence)")
def _enhanced_stripped(c):
    image = _enhanced(c, "multiframe_positions_stripped")
    for item in image.PerFrameFunctionalGroupsSequence:
        del item.PlanePositionSequence
    _save_dicom(image, c.root / "dicom" / "corpus" / "multiframe_positions_stripped" / "MF0001.dcm")
    c.row(c.uid("multiframe_positions_stripped"))
    return [refused("no_frame_geometry", where="dicom/corpus/multiframe_positions_stripped", kind="file", count=1)]


@kind("pydicom_MR_truncated", "refused: pydicom's MR_truncated.dcm (axial, 1 slice, pixel data short), with a "
                              "row: pixel_decode / bad_dicom_header / not_sagittal / too_few_slices")
def _mr_truncated(c):
    data = Path(pydicom.data.get_testdata_file("MR_truncated.dcm")).read_bytes()
    where = c.write("dicom/corpus/pydicom_MR_truncated/MR_truncated.dcm", data)
    uid = str(pydicom.dcmread(c.root / where, stop_before_pixels=True).SeriesInstanceUID)
    c.row(uid)
    return [refused(("pixel_decode", "bad_dicom_header", "not_sagittal", "too_few_slices"),
                    where="dicom/corpus/pydicom_MR_truncated", count=1)]


# ----- orientation vectors

def _scale_iop(factor: float):
    def edit(ds, k, n):
        row, col, _ = _orientation(ds)
        ds.ImageOrientationPatient = _ds(np.concatenate([row, col]) * factor)
    return edit


@kind("orientation_scaled_1.02", "processed (orientation vectors 2% off unit length: normalised)")
def _iop_102(c):
    uid, _ = c.dicom_series("orientation_scaled_1.02", _scale_iop(1.02))
    return [processed(uid)]


@kind("orientation_scaled_1.10", "refused bad_orientation (every file; vectors 10% off unit length)")
def _iop_110(c):
    uid, paths = c.dicom_series("orientation_scaled_1.10", _scale_iop(1.10))
    return [refused("bad_orientation", where="dicom/corpus/orientation_scaled_1.10", kind="file",
                    count=len(paths)), Check("not_processed", series_id=uid)]


@kind("orientation_not_orthogonal", "refused bad_orientation (every file; row/column at 60 degrees)")
def _iop_skew(c):
    def edit(ds, k, n):
        row, col, _ = _orientation(ds)
        ds.ImageOrientationPatient = _ds(np.concatenate([row, np.cos(np.radians(30)) * col
                                                         + np.sin(np.radians(30)) * row]))
    uid, paths = c.dicom_series("orientation_not_orthogonal", edit)
    return [refused("bad_orientation", where="dicom/corpus/orientation_not_orthogonal", kind="file",
                    count=len(paths)), Check("not_processed", series_id=uid)]


@kind("axial_series", "refused not_sagittal (dicom)")
def _axial(c):
    first = pydicom.dcmread(c.files[c.base][0], stop_before_pixels=True)
    origin = np.array([float(v) for v in first.ImagePositionPatient])

    def edit(ds, k, n):
        ds.ImageOrientationPatient = _ds([1, 0, 0, 0, 1, 0])
        ds.ImagePositionPatient = _ds(origin + [0, 0, 4.0 * k])
    uid, _ = c.dicom_series("axial_series", edit)
    return [refused("not_sagittal", series_id=uid, kind="dicom")]


@kind("oblique_40_degrees", "refused not_sagittal (dicom; slice normal 40 degrees from left-right)")
def _oblique(c):
    first = pydicom.dcmread(c.files[c.base][0], stop_before_pixels=True)
    origin = np.array([float(v) for v in first.ImagePositionPatient])
    spacing = float(first.SpacingBetweenSlices)
    t = np.radians(40)
    rotate = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])

    def edit(ds, k, n):
        row, col, _ = _orientation(ds)
        row, col = rotate @ row, rotate @ col
        ds.ImageOrientationPatient = _ds(np.concatenate([row, col]))
        ds.ImagePositionPatient = _ds(origin + k * spacing * np.cross(row, col))
    uid, _ = c.dicom_series("oblique_40_degrees", edit)
    return [refused("not_sagittal", series_id=uid, kind="dicom")]


# ----- series assembly

@kind("localizer_in_series", "processed sagittal part; the 3 axial localizer slices in the same SeriesInstanceUID, "
                             "sorting first, refused other_part")
def _localizer(c):
    uid, paths = c.dicom_series("localizer_in_series")
    rng = np.random.default_rng(c.seed())
    template = pydicom.dcmread(paths[0])
    for n in range(3):
        ds = copy.deepcopy(template)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = writers.make_uid("corpus-loc", n)
        ds.ImageOrientationPatient = _ds([1, 0, 0, 0, 1, 0])
        ds.ImagePositionPatient = _ds([-128.0, -128.0, 300.0 - 20.0 * n])
        ds.Rows, ds.Columns, ds.PixelSpacing = 128, 128, ["2", "2"]
        ds.SeriesDescription = "LOCALIZER"
        ds.PixelData = rng.integers(0, 2000, (128, 128)).astype(np.uint16).tobytes()
        _save_dicom(ds, paths[0].parent / f"0000_loc{n}.dcm")
    return [processed(uid), refused("other_part", series_id=uid, kind="dicom", absent=False, count=1)]


@kind("series_split_over_folders", "processed (one series' files spread over two export folders)")
def _split(c):
    uid, paths = c.dicom_series("series_split_over_folders", folder="dicom/corpus/series_split_over_folders/a")
    for path in paths[1::2]:
        target = path.parent.parent / "b" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    return [processed(uid)]


@kind("no_instance_numbers", "processed (InstanceNumber absent, hashed file names: order from positions)")
def _no_instance(c):
    def edit(ds, k, n):
        del ds.InstanceNumber
    uid, paths = c.dicom_series("no_instance_numbers", edit)
    for path in paths:
        path.rename(path.with_name(writers.make_uid("name", path.name)[-12:]))
    return [processed(uid)]


@kind("missing_slice", "refused missing_slices (dicom; the middle slice file deleted)")
def _missing(c):
    n = len(c.files[c.base])
    uid, _ = c.dicom_series("missing_slice", select=[k for k in range(n) if k != n // 2])
    return [refused("missing_slices", series_id=uid, kind="dicom")]


@kind("duplicate_positions", "refused duplicate_positions (dicom; a second slice, own SOPInstanceUID, same position)")
def _dup_positions(c):
    uid, paths = c.dicom_series("duplicate_positions")
    ds = pydicom.dcmread(paths[len(paths) // 2])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = writers.make_uid("corpus-repeat")
    _save_dicom(ds, paths[0].parent / "IM0100")
    return [refused("duplicate_positions", series_id=uid, kind="dicom")]


@kind("uneven_spacing", "refused uneven_spacing (dicom; one slice moved by 30% of the spacing)")
def _uneven(c):
    def edit(ds, k, n):
        if k == n // 2:
            _, _, normal = _orientation(ds)
            ds.ImagePositionPatient = _ds(np.array([float(v) for v in ds.ImagePositionPatient])
                                          + 0.3 * float(ds.SpacingBetweenSlices) * normal)
    uid, _ = c.dicom_series("uneven_spacing", edit)
    return [refused("uneven_spacing", series_id=uid, kind="dicom")]


@kind("two_slices", "refused too_few_slices (dicom)")
def _two(c):
    n = len(c.files[c.base])
    uid, _ = c.dicom_series("two_slices", select=[n // 2, n // 2 + 1])
    return [refused("too_few_slices", series_id=uid, kind="dicom")]


@kind("one_slice", "refused too_few_slices (dicom)")
def _one(c):
    uid, _ = c.dicom_series("one_slice", select=[len(c.files[c.base]) // 2])
    return [refused("too_few_slices", series_id=uid, kind="dicom")]


def _slab(c: Corpus, name: str, n_slices: int) -> str:
    """`n_slices` middle slices of the base series with the mask cut to the same slab."""
    n = len(c.files[c.base])
    first = (n - n_slices) // 2
    uid, _ = c.dicom_series(name, select=list(range(first, first + n_slices)), mask=False)
    mask = nib.load(c.root / "masks" / f"{c.base}.nii.gz")
    assert mask.shape[2] == n  # DICOM masks are [column, row, slice], as dcm2niix writes them
    mask = mask.slicer[:, :, first:first + n_slices]
    c.write(f"masks/{uid}.nii.gz", _nifti_bytes(np.asarray(mask.dataobj), mask.affine))
    return uid


@kind("slab_of_min_slices", "processed (exactly the plan's min_slices sagittal slices, mask cut to match)")
def _slab_min(c):
    return [processed(_slab(c, "slab_of_min_slices", MIN_SLICES))]


@kind("slab_one_below_min_slices", "refused too_few_slices (min_slices - 1 slices, mask cut to match)")
def _slab_below(c):
    return [refused("too_few_slices", series_id=_slab(c, "slab_one_below_min_slices", MIN_SLICES - 1), kind="dicom")]


@kind("orientation_float_noise", "processed as one series (IOP differs by 2e-7 between slices, straddling a "
                                 "4th-decimal rounding boundary): no other_part")
def _iop_noise(c):
    def edit(ds, k, n):
        row, col, _ = _orientation(ds)
        boundary = (np.floor(abs(row[1]) * 1e4) + 0.5) / 1e4 * np.sign(row[1])
        row[1] = boundary + (1e-7 if k % 2 else -1e-7)
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in np.concatenate([row, col])]
    uid, _ = c.dicom_series("orientation_float_noise", edit)
    return [processed(uid), Check("not_refused", series_id=uid)]


@kind("position_float_noise", "processed (ImagePositionPatient off by +-0.02 mm along the normal)")
def _ipp_noise(c):
    def edit(ds, k, n):
        _, _, normal = _orientation(ds)
        ds.ImagePositionPatient = _ds(np.array([float(v) for v in ds.ImagePositionPatient])
                                      + (0.02 if k % 2 else -0.02) * normal)
    uid, _ = c.dicom_series("position_float_noise", edit)
    return [processed(uid)]


@kind("character_set_typo", "processed (SpecificCharacterSet 'ISO-IR 100', a common typo pydicom warns about)")
def _charset(c):
    def edit(ds, k, n):
        ds.SpecificCharacterSet = "ISO-IR 100"
    uid, _ = c.dicom_series("character_set_typo", edit)
    return [processed(uid)]


@kind("signed_pixels", "processed (PixelRepresentation 1, negative stored values, RescaleIntercept +1000)")
def _signed(c):
    def edit(ds, k, n):
        stored = np.frombuffer(ds.PixelData, "<u2").astype(np.int32) - 1000
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = f"{float(ds.RescaleIntercept) + 1000:g}"
        ds.PixelData = stored.astype("<i2").tobytes()
    uid, _ = c.dicom_series("signed_pixels", edit)
    return [processed(uid)]


@kind("mixed_transfer_syntaxes", "processed (every other slice recompressed RLE Lossless by a PACS)")
def _mixed(c):
    def edit(ds, k, n):
        if k % 2:
            pixels = np.frombuffer(ds.PixelData, "<u2").reshape(ds.Rows, ds.Columns)
            ds.compress(pydicom.uid.RLELossless, pixels, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    uid, _ = c.dicom_series("mixed_transfer_syntaxes", edit)
    return [processed(uid)]


# ----- pixels

@kind("rescale_slope_zero", "refused constant_image (dicom; RescaleSlope 0 in every slice)")
def _slope_zero(c):
    def edit(ds, k, n):
        ds.RescaleSlope = "0"
    uid, _ = c.dicom_series("rescale_slope_zero", edit)
    return [refused("constant_image", series_id=uid, kind="dicom")]


@kind("pixel_data_truncated", "refused pixel_decode (dicom; the middle slice's file cut to 60%)")
def _pixel_cut(c):
    uid, paths = c.dicom_series("pixel_data_truncated")
    path = paths[len(paths) // 2]
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * 0.6)])
    return [refused("pixel_decode", series_id=uid, kind="dicom")]


@kind("corrupt_jpeg2000_stream", "refused pixel_decode (dicom; JPEG 2000 transfer syntax, garbage codestream)")
def _bad_j2k(c):
    rng = np.random.default_rng(c.seed())

    def edit(ds, k, n):
        ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEG2000Lossless
        ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51" + rng.bytes(4000)])
        ds["PixelData"].VR = "OB"
    uid, _ = c.dicom_series("corrupt_jpeg2000_stream", edit)
    return [refused("pixel_decode", series_id=uid, kind="dicom")]


# ----- duplicates in the DICOM tree

@kind("byte_copy_of_a_slice", "processed series; the copy elsewhere in the tree refused duplicate_instance")
def _byte_copy(c):
    uid = c.dicom_ids[0]
    source = c.files[uid][len(c.files[uid]) // 2]
    where = c.write("dicom/zz_copies/IM_copy", source.read_bytes())
    return [processed(uid), refused("duplicate_instance", where=where, kind="file", count=1)]


@kind("symlink_to_a_slice", "processed series; the symbolic link refused duplicate_instance")
def _symlink(c):
    uid = c.dicom_ids[1]
    source = c.files[uid][0]
    link = c.root / "dicom" / "zz_links" / "IM_link"
    link.parent.mkdir(parents=True)
    os.symlink(os.path.relpath(source, link.parent), link)
    return [processed(uid), refused("duplicate_instance", where=c.rel(link), kind="file", count=1)]


@kind("series_exported_twice", "processed once; every file of the second export refused duplicate_instance")
def _exported_twice(c):
    uid = c.dicom_ids[2]
    files = c.files[uid]
    for path in files:
        c.write(f"dicom/zz_reexport/{path.name}", path.read_bytes())
    return [processed(uid), refused("duplicate_instance", where="dicom/zz_reexport", kind="file", count=len(files))]


@kind("dicom_and_nifti_same_id", "DICOM processed; nifti/<its SeriesInstanceUID>.nii.gz refused duplicate_series")
def _dicom_nifti(c):
    uid = c.dicom_ids[3]
    rel = c.nifti(uid, mask=False, row=False)
    return [processed(uid), refused("duplicate_series", where=rel, series_id=uid, kind="nifti", absent=False,
                                    count=1)]


# ----- files in nifti/ that are not NIfTI

@kind("json_sidecar", "refused not_nifti (dcm2niix's .json next to the scan)")
def _json(c):
    where = c.write(f"nifti/{c.nifti_ids[2]}.json", b'{"Manufacturer": "Siemens", "EchoTime": 0.095}\n')
    return [refused("not_nifti", where=where, kind="file", count=1)]


@kind("ds_store_in_nifti", "refused not_nifti")
def _ds_store_nifti(c):
    return [refused("not_nifti", where=c.write("nifti/.DS_Store", b"\x00\x00\x00\x01Bud1" + bytes(2042)),
                    kind="file", count=1)]


@kind("backup_copy_nii_gz_bak", "refused not_nifti (X.nii.gz.bak)")
def _bak(c):
    data = (c.root / "nifti" / f"{c.nifti_ids[2]}.nii.gz").read_bytes()
    return [refused("not_nifti", where=c.write("nifti/cx-backup.nii.gz.bak", data), kind="file", count=1)]


@kind("analyze_hdr_img_pair", "refused not_nifti (both files of an Analyze 7.5 pair)")
def _analyze(c):
    image = nib.AnalyzeImage(np.zeros((8, 8, 8), np.int16), np.eye(4))
    (c.root / "nifti").mkdir(exist_ok=True)
    image.to_filename(c.root / "nifti" / "cx-analyze.img")
    return [refused("not_nifti", where="nifti/cx-analyze.hdr", kind="file", count=1),
            refused("not_nifti", where="nifti/cx-analyze.img", kind="file", count=1)]


# ----- NIfTI scans

@kind("nifti_nan_voxel", "refused non_finite (nifti)")
def _nan(c):
    data = c.noisy_scan().astype(np.float32)
    data[5, 5, 5] = np.nan
    c.nifti("cx-nan", data=data)
    return [refused("non_finite", series_id="cx-nan", kind="nifti")]


@kind("nifti_inf_voxel", "refused non_finite (nifti)")
def _inf(c):
    data = c.noisy_scan().astype(np.float32)
    data[7, 7, 7] = np.inf
    c.nifti("cx-inf", data=data)
    return [refused("non_finite", series_id="cx-inf", kind="nifti")]


@kind("nifti_blank_export", "refused constant_image (nifti; every voxel 0)")
def _blank(c):
    c.nifti("cx-blank", data=np.zeros_like(c.scan_raw))
    return [refused("constant_image", series_id="cx-blank", kind="nifti")]


@kind("nifti_no_orientation", "refused no_orientation (qform_code = sform_code = 0)")
def _no_orientation(c):
    _patch_header(c.root / c.nifti("cx-noorient"), qform_code=0, sform_code=0)
    return [refused("no_orientation", series_id="cx-noorient", kind="nifti")]


@kind("nifti_zero_pixdim", "refused bad_voxel_size (qform only, pixdim[1] = 0, in the scan and in its mask)")
def _pixdim(c):
    _patch_header(c.root / c.nifti("cx-pixdim0"), sform_code=0, pixdim1=0.0)
    _patch_header(c.root / "masks" / "cx-pixdim0.nii.gz", sform_code=0, pixdim1=0.0)  # the same converter
    return [refused("bad_voxel_size", series_id="cx-pixdim0", kind="nifti")]


@kind("nifti_4d", "refused not_3d (two volumes)")
def _four_d(c):
    c.nifti("cx-4d", data=np.stack([c.noisy_scan(), c.noisy_scan()], axis=-1))
    return [refused("not_3d", series_id="cx-4d", kind="nifti")]


@kind("nifti_trailing_singleton_dim", "processed (shape x, y, z, 1: a 3D image written with a 4th axis of 1)")
def _singleton(c):
    c.nifti("cx-singleton", data=c.noisy_scan()[..., None])
    return [processed("cx-singleton")]


@kind("nifti_corrupt_gzip", "refused unreadable_scan (gzip stream cut in half)")
def _bad_gzip(c):
    path = c.root / c.nifti("cx-badgzip")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return [refused("unreadable_scan", series_id="cx-badgzip", kind="nifti")]


@kind("nifti_truncated_nii", "refused unreadable_scan (uncompressed .nii cut in half)")
def _cut_nii(c):
    path = c.root / c.nifti("cx-cutnii", gz=False)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return [refused("unreadable_scan", series_id="cx-cutnii", kind="nifti")]


@kind("nii_next_to_nii_gz", "X.nii.gz processed; X.nii refused duplicate_series")
def _both(c):
    c.nifti("cx-both", gz=False, mask=True)
    c.nifti("cx-both", mask=False, row=False)
    return [processed("cx-both"), refused("duplicate_series", where="nifti/cx-both.nii", kind="nifti",
                                          absent=False, count=1)]


@kind("upper_case_extension", "processed (X.NII.GZ)")
def _upper(c):
    c.nifti("cx-upper", rel="nifti/cx-upper.NII.GZ")
    return [processed("cx-upper")]


@kind("nifti_in_nested_folder", "processed (nifti/batch_2024/site_A/X.nii.gz)")
def _nested(c):
    c.nifti("cx-nested", rel="nifti/batch_2024/site_A/cx-nested.nii.gz")
    return [processed("cx-nested")]


@kind("uncompressed_scan_and_mask", "processed (X.nii scan and masks/X.nii)")
def _plain(c):
    c.nifti("cx-plain", gz=False, mask="masks/cx-plain.nii")
    return [processed("cx-plain")]


@kind("nifti_scl_slope_zero", "processed (scl_slope 0 means unscaled in NIfTI, unlike DICOM's RescaleSlope 0)")
def _scl_zero(c):
    _patch_header(c.root / c.nifti("cx-sclzero"), scl_slope=0.0, scl_inter=0.0)
    return [processed("cx-sclzero")]


@kind("nifti_qform_only", "processed (sform_code 0, orientation from the qform)")
def _qform_only(c):
    _patch_header(c.root / c.nifti("cx-qformonly"), sform_code=0)
    return [processed("cx-qformonly")]


@kind("nifti_sform_only", "processed (qform_code 0, orientation from the sform)")
def _sform_only(c):
    _patch_header(c.root / c.nifti("cx-sformonly"), qform_code=0)
    return [processed("cx-sformonly")]


@kind("nifti_zero_bytes", "refused unreadable_scan (an empty .nii.gz)")
def _zero_bytes(c):
    c.nifti("cx-zerobytes")
    (c.root / "nifti" / "cx-zerobytes.nii.gz").write_bytes(b"")
    return [refused("unreadable_scan", series_id="cx-zerobytes", kind="nifti")]


@kind("file_name_with_spaces", "processed (nifti/'cx patient 12 T2.nii.gz' and row 'cx patient 12 T2')")
def _spaces(c):
    c.nifti("cx patient 12 T2")
    return [processed("cx patient 12 T2")]


@kind("non_ascii_series_id", "processed (nifti/cx-Müller_T2.nii.gz and its UTF-8 row)")
def _non_ascii(c):
    c.nifti("cx-Müller_T2")
    return [processed("cx-Müller_T2")]


@kind("mask_in_other_axis_order", "processed (mask array transposed, its affine describing the same grid)")
def _mask_axes(c):
    c.nifti("cx-maskaxes", mask=False)
    affine = c.scan_affine[:, [2, 0, 1, 3]]
    c.write("masks/cx-maskaxes.nii.gz", _nifti_bytes(np.ascontiguousarray(c.mask_raw.transpose(2, 0, 1)), affine))
    return [processed("cx-maskaxes")]


@kind("appledouble_in_nifti", "refused, any code (macOS '._X.nii.gz' resource fork: not_nifti, unreadable_scan "
                              "or no_report_row)")
def _apple_nifti(c):
    where = c.write("nifti/._cx-apple.nii.gz", APPLEDOUBLE)
    return [refused(("not_nifti", "unreadable_scan", "no_report_row"), where=where, count=1)]


@kind("mask_affine_off_by_a_micron", "processed (mask origin 0.001 mm from the scan's)")
def _mask_micron(c):
    c.nifti("cx-maskmicron", mask=False)
    affine = c.scan_affine.copy()
    affine[:3, 3] += 0.001
    c.write("masks/cx-maskmicron.nii.gz", _nifti_bytes(c.mask_raw, affine))
    return [processed("cx-maskmicron")]


@kind("mask_half_voxel_shift", "refused mask_grid (mask grid moved by half a voxel)")
def _mask_shift(c):
    c.nifti("cx-maskshift", mask=False)
    affine = c.scan_affine.copy()
    affine[:3, 3] += 0.5 * affine[:3, 0]
    c.write("masks/cx-maskshift.nii.gz", _nifti_bytes(c.mask_raw, affine))
    return [refused("mask_grid", series_id="cx-maskshift", kind="nifti")]


@kind("dcm2niix_copy_under_another_id", "DICOM processed; its NIfTI conversion (same voxels, dcm2niix layout) "
                                        "under another id refused duplicate_scan")
def _converted(c):
    datasets = [pydicom.dcmread(p) for p in c.files[c.base]]
    assert all(float(d.RescaleSlope) == 1 and float(d.RescaleIntercept) == 0 for d in datasets)
    stored = np.stack([d.pixel_array for d in datasets]).transpose(2, 1, 0)  # [k, j, i] -> [i, j, k]
    mask = nib.load(c.root / "masks" / f"{c.base}.nii.gz")  # the DICOM grid in dcm2niix's layout
    assert mask.shape == stored.shape
    c.write("nifti/zz-dcm2niix-copy.nii.gz", _nifti_bytes(np.ascontiguousarray(stored), mask.affine))
    shutil.copy(c.root / "masks" / f"{c.base}.nii.gz", c.root / "masks" / "zz-dcm2niix-copy.nii.gz")
    c.row("zz-dcm2niix-copy")
    return [processed(c.base), refused("duplicate_scan", series_id="zz-dcm2niix-copy", kind="nifti")]


@kind("same_scan_under_another_id", "original processed; the byte copy under another id refused duplicate_scan")
def _dup_scan(c):
    original = c.nifti_ids[1]
    c.write("nifti/zz-rescan-copy.nii.gz", (c.root / "nifti" / f"{original}.nii.gz").read_bytes())
    shutil.copy(c.root / "masks" / f"{original}.nii.gz", c.root / "masks" / "zz-rescan-copy.nii.gz")
    c.row("zz-rescan-copy")
    return [processed(original), refused("duplicate_scan", series_id="zz-rescan-copy", kind="nifti")]


# ----- masks

@kind("no_mask", "refused no_mask")
def _no_mask(c):
    c.nifti("cx-nomask", mask=False)
    return [refused("no_mask", series_id="cx-nomask", kind="nifti")]


@kind("two_masks", "refused ambiguous_mask (masks/X.nii.gz and masks/X.nii)")
def _two_masks(c):
    c.nifti("cx-twomasks")
    c.write("masks/cx-twomasks.nii", _nifti_bytes(c.mask_raw, c.scan_affine, gz=False))
    return [refused("ambiguous_mask", series_id="cx-twomasks", kind="nifti")]


@kind("mask_corrupt_gzip", "refused unreadable_mask")
def _mask_gzip(c):
    c.nifti("cx-maskgzip")
    path = c.root / "masks" / "cx-maskgzip.nii.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return [refused("unreadable_mask", series_id="cx-maskgzip", kind="nifti")]


@kind("mask_other_grid", "refused mask_grid (3 slices fewer than the scan)")
def _mask_grid(c):
    c.nifti("cx-maskgrid", mask=False)
    c.write("masks/cx-maskgrid.nii.gz", _nifti_bytes(c.mask_raw[:-3], c.scan_affine))
    return [refused("mask_grid", series_id="cx-maskgrid", kind="nifti")]


@kind("mask_fractional_float", "refused mask_not_labels (float mask with values such as 43.4)")
def _mask_float(c):
    c.nifti("cx-maskfloat", mask=False)
    mask = c.mask_raw.astype(np.float32)
    mask[mask > 0] += 0.4
    c.write("masks/cx-maskfloat.nii.gz", _nifti_bytes(mask, c.scan_affine))
    return [refused("mask_not_labels", series_id="cx-maskfloat", kind="nifti")]


@kind("mask_integral_float", "processed (labels stored as float32 with whole values, as ITK-SNAP/Slicer save)")
def _mask_float_ok(c):
    c.nifti("cx-maskfloatok", mask=False)
    c.write("masks/cx-maskfloatok.nii.gz", _nifti_bytes(c.mask_raw.astype(np.float32), c.scan_affine))
    return [processed("cx-maskfloatok")]


@kind("mask_without_spine", "refused mask_no_spine (all background)")
def _mask_empty(c):
    c.nifti("cx-maskempty", mask=False)
    c.write("masks/cx-maskempty.nii.gz", _nifti_bytes(np.zeros_like(c.mask_raw), c.scan_affine))
    return [refused("mask_no_spine", series_id="cx-maskempty", kind="nifti")]


@kind("lumbar_only_scan", "lumbar processed; whole refused region_partial; cervical refused region_absent")
def _lumbar(c):
    scan = nib.Nifti1Image(c.noisy_scan(), c.scan_affine)
    mask = nib.Nifti1Image(c.mask_raw, c.scan_affine)
    lumbar = np.argwhere(np.isin(c.mask_raw, LUMBAR_LABELS))
    low, high = np.maximum(lumbar.min(axis=0) - 8, 0), lumbar.max(axis=0) + 9
    box = tuple(slice(a, b) for a, b in zip(low, high))
    scan, mask = scan.slicer[box], mask.slicer[box]
    c.write("nifti/cx-lumbar.nii.gz", _nifti_bytes(np.asarray(scan.dataobj), scan.affine, *c.scan_slope_inter))
    c.write("masks/cx-lumbar.nii.gz", _nifti_bytes(np.asarray(mask.dataobj), mask.affine))
    c.row("cx-lumbar")
    return [processed("cx-lumbar", regions=("lumbar",), no_regions=("whole", "cervical")),
            refused("region_partial", series_id="cx-lumbar", region="whole", absent=False, count=1),
            refused("region_absent", series_id="cx-lumbar", region="cervical", absent=False, count=1)]


# ----- reports.csv rows

@kind("no_report_row", "refused no_report_row")
def _no_row(c):
    c.tiny_nifti("cx-norow")
    return [refused("no_report_row", series_id="cx-norow", kind="nifti")]


@kind("id_case_differs", "refused no_report_row (row 'CX-CASEID' for nifti/cx-CaseId.nii.gz: ids are exact); "
                         "the row itself is used")
def _case(c):
    c.tiny_nifti("cx-CaseId")
    line = c.row("CX-CASEID")
    return [refused("no_report_row", series_id="cx-CaseId", kind="nifti"), Check("row_used", line=line)]


def _rejected_row(c: Corpus, series_id: str, codes, column: str | None, cells: dict | None = None,
                  subject_id: str | None = None) -> list[Check]:
    c.tiny_nifti(series_id)
    line = c.row(series_id, subject_id=subject_id, cells=cells)
    return [rejected(codes, line, column=column, series_id=series_id),
            refused("report_row_rejected", series_id=series_id, kind="nifti")]


def _processed_row(c: Corpus, series_id: str, cells: dict | None = None, subject_id: str | None = None,
                   age: float | None = None) -> list[Check]:
    c.nifti(series_id.strip(), row=False)
    line = c.row(series_id, subject_id=subject_id, cells=cells)
    return [processed(series_id.strip(), age=age, subject_id=None if subject_id is None else subject_id.strip()),
            Check("row_used", line=line)]


@kind("age_45Y", "processed, age 45 years")
def _age_45y(c):
    return _processed_row(c, "cx-age45Y", {"age": "45Y"}, age=45.0)


@kind("age_045Y", "processed, age 45 years (DICOM age string)")
def _age_045y(c):
    return _processed_row(c, "cx-age045Y", {"age": "045Y"}, age=45.0)


@kind("age_006M", "processed, age 0.5 years (DICOM age string in months)")
def _age_006m(c):
    return _processed_row(c, "cx-age006M", {"age": "006M"}, age=0.5)


@kind("age_negative", "row rejected age_out_of_range ('-5'); its scan refused report_row_rejected")
def _age_neg(c):
    return _rejected_row(c, "cx-ageneg", "age_out_of_range", "age", {"age": "-5"})


@kind("age_250", "row rejected age_out_of_range; its scan refused report_row_rejected")
def _age_250(c):
    return _rejected_row(c, "cx-age250", "age_out_of_range", "age", {"age": "250"})


@kind("age_zero", "row rejected age_out_of_range (0 is outside 0 < age <= 120)")
def _age_zero(c):
    return _rejected_row(c, "cx-age0", "age_out_of_range", "age", {"age": "0"})


@kind("age_blank", "row rejected missing_age")
def _age_blank(c):
    return _rejected_row(c, "cx-ageblank", "missing_age", "age", {"age": ""})


@kind("age_forty", "row rejected bad_age ('forty')")
def _age_forty(c):
    return _rejected_row(c, "cx-ageforty", "bad_age", "age", {"age": "forty"})


@kind("age_decimal_comma", "row rejected bad_age ('45,5', quoted)")
def _age_comma(c):
    return _rejected_row(c, "cx-agecomma", "bad_age", "age", {"age": "45,5"})


@kind("age_excel_error", "row rejected bad_age or missing_age ('#N/A' from a spreadsheet formula)")
def _age_na(c):
    return _rejected_row(c, "cx-agena", ("bad_age", "missing_age"), "age", {"age": "#N/A"})


@kind("subject_id_blank", "row rejected missing_subject_id")
def _subject_blank(c):
    return _rejected_row(c, "cx-nosubject", "missing_subject_id", "subject_id", subject_id="")


@kind("series_id_blank", "row rejected missing_series_id")
def _series_blank(c):
    line = c.row("", subject_id="CXS-noseries")
    return [rejected("missing_series_id", line, series_id="")]


@kind("series_id_on_two_rows", "both rows rejected duplicate_series_id; the scan refused report_row_rejected")
def _dup_rows(c):
    c.tiny_nifti("cx-tworows")
    first = c.row("cx-tworows", subject_id="CXS-a")
    second = c.row("cx-tworows", subject_id="CXS-b")
    return [rejected("duplicate_series_id", first, series_id="cx-tworows"),
            rejected("duplicate_series_id", second, series_id="cx-tworows"),
            refused("report_row_rejected", series_id="cx-tworows", kind="nifti")]


@kind("leading_zeros_007", "processed: nifti/007.nii.gz matches row '007' (subject '0042' stays a string)")
def _zeros(c):
    return _processed_row(c, "007", subject_id="0042")


@kind("id_7_next_to_row_007", "refused no_report_row (nifti/7.nii.gz: the row '007' is another id)")
def _seven(c):
    c.tiny_nifti("7")
    return [refused("no_report_row", series_id="7", kind="nifti")]


@kind("ids_with_spaces", "processed: row ' cx-padded ' (subject ' CXS-pad ') matches nifti/cx-padded.nii.gz")
def _padded(c):
    return _processed_row(c, " cx-padded ", subject_id=" CXS-pad ")


@kind("sex_female", "processed (sex 'female')")
def _female(c):
    return _processed_row(c, "cx-female", {"sex": "female"})


@kind("sex_X", "row rejected bad_sex")
def _sex_x(c):
    return _rejected_row(c, "cx-sexX", "bad_sex", "sex", {"sex": "X"})


@kind("grade_moderate", "row rejected bad_grade (text grade)")
def _grade_text(c):
    return _rejected_row(c, "cx-grademoderate", "bad_grade", GRADE_COLUMN, {GRADE_COLUMN: "moderate"})


@kind("grade_5", "row rejected bad_grade")
def _grade_5(c):
    return _rejected_row(c, "cx-grade5", "bad_grade", GRADE_COLUMN, {GRADE_COLUMN: "5"})


@kind("grade_blank", "row rejected bad_grade")
def _grade_blank(c):
    return _rejected_row(c, "cx-gradeblank", "bad_grade", GRADE_COLUMN, {GRADE_COLUMN: ""})


@kind("grade_2.0", "processed (a spreadsheet writes the grade 2 as '2.0')")
def _grade_float(c):
    return _processed_row(c, "cx-grade2.0", {GRADE_COLUMN: "2.0"})


@kind("smoking_maybe", "row rejected bad_value (declared yes/no column 'smoking' holds 'maybe')")
def _smoking(c):
    return _rejected_row(c, "cx-smokingmaybe", "bad_value", "smoking", {"smoking": "maybe"})


@kind("too_many_fields", "row rejected wrong_field_count; the scan refused report_row_rejected")
def _many(c):
    c.tiny_nifti("cx-toomany")
    fields = list(c.template)
    fields[c.col["series_id"]], fields[c.col["subject_id"]] = "cx-toomany", "CXS-toomany"
    line = c.raw_row(fields + ["unquoted, comment", "spilled"])
    return [rejected("wrong_field_count", line, series_id="cx-toomany"),
            refused("report_row_rejected", series_id="cx-toomany", kind="nifti")]


@kind("too_few_fields", "row rejected wrong_field_count (a row cut after 5 fields)")
def _few(c):
    fields = list(c.template)
    fields[c.col["series_id"]], fields[c.col["subject_id"]] = "cx-toofew", "CXS-toofew"
    return [rejected("wrong_field_count", c.raw_row(fields[:5]))]


@kind("free_text_comment_column", "x__comment ignored: never exported, never a rejection, text in no output")
def _comment(c):
    line = c.row("cx-comment", cells={COMMENT_COLUMN: f"Pt phoned, Mrs Q. {COMMENT_NEEDLE}, re: results"})
    c.nifti("cx-comment", row=False)

    def check(built):
        assert COMMENT_COLUMN not in built.exported.columns
        assert not [r for r in built.rejections if r["column"] == COMMENT_COLUMN]
        for path in built.out.rglob("*"):
            if path.is_file():
                assert COMMENT_NEEDLE.encode() not in path.read_bytes(), path.name
    return [processed("cx-comment"), Check("row_used", line=line), Check("custom", func=check)]
