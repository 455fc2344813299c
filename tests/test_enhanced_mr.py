"""Enhanced MR and Legacy Converted Enhanced MR (multi-frame) files read into the same Volume as classic series."""

from __future__ import annotations

import dataclasses
import gzip
import subprocess
import sys
from pathlib import Path

import highdicom
import nibabel as nib
import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from data_prep.phantom import acquisition, writers
from spinejax.scans import canonical, dicom_series
from tests import dicom_reference as ref

WHO = writers.Identity("DOE^JANE", "MRN1", "19700101", "F", 50, "A1", "20200101", writers.make_uid("emr-st"),
                       writers.make_uid("emr-se"), writers.make_uid("emr-fr"), 3, "TEST")


# -- the classic series (same construction as tests/test_scan_reading.py) ----------------------------------------

def _world_value(points: np.ndarray) -> np.ndarray:
    """An asymmetric function of LPS position (mm): every voxel knows where it is."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return 1000.0 + 3.0 * x + 2.0 * y + 1.0 * z + 0.01 * x * z


def _small_acquisition(tilt_deg: float = 0.0, **changes) -> acquisition.Acquisition:
    rng = np.random.default_rng(3)
    acq = acquisition.draw_acquisition(rng, "site_B", 600.0, 0.0)
    t = np.radians(tilt_deg)
    rotate = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    acq = dataclasses.replace(acq, rows=40, cols=24, n_slices=7, instance_order=(3, 0, 6, 1, 4, 2, 5),
                              row_dir=tuple(rotate @ [0, 1, 0]), col_dir=tuple(rotate @ [0, 0, -1]))
    return dataclasses.replace(acq, **changes)


def _stored(acq: acquisition.Acquisition) -> np.ndarray:
    k, j, i = np.meshgrid(*(np.arange(n) for n in (acq.n_slices, acq.rows, acq.cols)), indexing="ij")
    ijk1 = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(float)
    points = ijk1 @ acq.affine_lps().T
    return writers.to_stored(_world_value(points[..., :3]), acq)


def _classic(folder: Path, acq: acquisition.Acquisition, who: writers.Identity = WHO) -> list[Path]:
    return writers.write_dicom_series(folder, _stored(acq), acq, who, [f"s{m}.dcm" for m in range(acq.n_slices)])


def _multiframe(path: Path, datasets: list[Dataset], series_uid: str = WHO.series_uid, keep_order: bool = False,
                syntax: str | None = None) -> Dataset:
    """`datasets` as one Legacy Converted Enhanced MR file at `path` (frames in the given order if keep_order,
    else in highdicom's spatial order; pixels in transfer syntax `syntax`, else the datasets' own)."""
    converted = highdicom.legacy.LegacyConvertedEnhancedMRImage(
        legacy_datasets=datasets, series_instance_uid=series_uid, series_number=WHO.series_number,
        sop_instance_uid=writers.make_uid("lce", path.name, series_uid), instance_number=1,
        include_dimension_index=False if keep_order else None, transfer_syntax_uid=syntax)
    path.parent.mkdir(parents=True, exist_ok=True)
    converted.save_as(path)
    return converted


def _only_series(folder: Path) -> dicom_series.SeriesFiles:
    series, failures = dicom_series.find_series(folder)
    assert not failures, failures
    assert len(series) == 1 and series[0].part == 0
    return series[0]


def _frame_positions(dataset: Dataset) -> np.ndarray:
    return np.array([frame.PlanePositionSequence[0].ImagePositionPatient
                     for frame in dataset.PerFrameFunctionalGroupsSequence], float)


# -- 1. classic series == its Legacy Converted Enhanced MR file, in any frame order ---------------------------------

@pytest.mark.parametrize("tilt_deg, slope, intercept", [(0.0, 1.0, 0.0), (6.0, 1.0, 0.0), (6.0, 0.37, -12.5)])
def test_legacy_converted_enhanced_gives_the_classic_series_volume(tmp_path, tilt_deg, slope, intercept):
    acq = _small_acquisition(tilt_deg, rescale_slope=slope, rescale_intercept=intercept)
    paths = _classic(tmp_path / "classic", acq)
    classic = canonical.to_canonical(dicom_series.load_series(_only_series(tmp_path / "classic")))
    # The classic reading itself is right: each voxel holds the value of its own position.
    index = np.stack(np.meshgrid(*(np.arange(s) for s in classic.data.shape), indexing="ij"), -1).reshape(-1, 3)
    points = np.c_[index, np.ones(len(index))] @ classic.affine_lps.T
    np.testing.assert_allclose(classic.data.reshape(-1), _world_value(points[:, :3]), atol=slope / 2 + 0.01)
    assert classic.obliquity_deg()[1] == pytest.approx(tilt_deg, abs=1e-2)

    datasets = [pydicom.dcmread(p) for p in paths]  # InstanceNumber order, not position order
    order = np.random.default_rng(11).permutation(len(datasets))
    for name, frames, keep_order, syntax in [("spatial", datasets, False, None),
                                             ("shuffled", [datasets[i] for i in order], True, None),
                                             ("shuffled_jpeg_ls", [datasets[i] for i in order], True,
                                              pydicom.uid.JPEGLSLossless)]:
        converted = _multiframe(tmp_path / name / "multiframe.dcm", frames, keep_order=keep_order, syntax=syntax)
        assert converted.file_meta.TransferSyntaxUID == (syntax or datasets[0].file_meta.TransferSyntaxUID)
        assert int(converted.NumberOfFrames) == acq.n_slices
        along_normal = _frame_positions(converted) @ acq.normal
        if name != "spatial":  # the frames really are out of order in the file
            assert not (np.all(np.diff(along_normal) > 0) or np.all(np.diff(along_normal) < 0))
        # The rescale is in the functional groups only, where the reader must find it.
        assert "RescaleSlope" not in converted
        group = converted.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
        assert (float(group.RescaleSlope), float(group.RescaleIntercept)) == (slope, intercept)

        series = _only_series(tmp_path / name)
        assert len(series.slices) == acq.n_slices and series.files == (tmp_path / name / "multiframe.dcm",)
        assert sorted(s.frame for s in series.slices) == list(range(acq.n_slices))
        enhanced = canonical.to_canonical(dicom_series.load_series(series))
        np.testing.assert_array_equal(enhanced.data, classic.data, err_msg=name)
        np.testing.assert_allclose(enhanced.affine_lps, classic.affine_lps, rtol=0, atol=1e-4, err_msg=name)

    # One frame per file (how some scanners export Enhanced MR): a series of one-frame files.
    for n, dataset in enumerate(datasets):
        _multiframe(tmp_path / "one_frame_each" / f"f{n}.dcm", [dataset], keep_order=True)
    series = _only_series(tmp_path / "one_frame_each")
    assert len(series.files) == len(series.slices) == acq.n_slices and {s.frame for s in series.slices} == {0}
    enhanced = canonical.to_canonical(dicom_series.load_series(series))
    np.testing.assert_array_equal(enhanced.data, classic.data)
    np.testing.assert_allclose(enhanced.affine_lps, classic.affine_lps, rtol=0, atol=1e-4)


# -- 2. hand-built Enhanced MR: shared pixel measures and orientation, per-frame position and rescale ----------------

def _enhanced_mr(name: str) -> Dataset:
    """An empty Enhanced MR dataset with its file meta, instance and series UIDs made from `name`."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.EnhancedMRImageStorage
    meta.MediaStorageSOPInstanceUID = writers.make_uid(name)
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID = "MR", writers.make_uid(name + "-series")
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    return ds


def test_hand_built_enhanced_mr_applies_each_frames_own_rescale(tmp_path):
    rows, cols, n = 6, 5, 5
    spacing_rc, gap = (0.8, 0.7), 2.5
    t = np.radians(4.0)
    row_dir = np.array([0.0, np.cos(t), np.sin(t)])  # towards posterior, tilted
    col_dir = np.array([0.0, np.sin(t), -np.cos(t)])  # towards feet
    normal = np.cross(row_dir, col_dir)
    origin = np.array([-5.0, -20.0, 30.0])
    slice_of_frame = [3, 0, 4, 1, 2]  # frame f lies at slice slice_of_frame[f] along the normal
    rescale_of_frame = [(0.5, -100.0), (1.25, 0.0), (2.0, 37.5), (0.75, 12.25), (3.0, -1.5)]
    stored = np.random.default_rng(5).integers(-300, 3000, size=(n, rows, cols)).astype(np.int16)

    ds = _enhanced_mr("hand-built")
    ds.StudyInstanceUID = WHO.study_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY", "T2", "NONE"]
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, n
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    measures, orientation = Dataset(), Dataset()
    measures.PixelSpacing = [f"{v:g}" for v in spacing_rc]
    measures.SliceThickness = measures.SpacingBetweenSlices = f"{gap:g}"
    orientation.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_dir, *col_dir)]
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for f in range(n):
        position, transform, frame = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [f"{v:.4f}" for v in origin + slice_of_frame[f] * gap * normal]
        transform.RescaleSlope, transform.RescaleIntercept = (f"{v:g}" for v in rescale_of_frame[f])
        transform.RescaleType = "US"
        frame.PlanePositionSequence = Sequence([position])
        frame.PixelValueTransformationSequence = Sequence([transform])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = stored.tobytes()
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "enhanced.dcm", enforce_file_format=True)

    series = _only_series(tmp_path / "in")
    assert [s.rescale for s in series.slices] == rescale_of_frame
    volume = dicom_series.load_series(series)
    expected = np.empty((n, rows, cols), np.float64)
    for f in range(n):
        slope, intercept = rescale_of_frame[f]
        expected[slice_of_frame[f]] = stored[f].astype(np.float64) * slope + intercept
    np.testing.assert_allclose(volume.data, expected, rtol=1e-6, atol=1e-4)
    # The first frame's rescale for every frame would not do: the test can tell them apart.
    assert not np.allclose(expected, stored[np.argsort(slice_of_frame)] * 0.5 - 100.0)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = normal * gap, col_dir * spacing_rc[0], row_dir * spacing_rc[1]
    affine[:3, 3] = origin
    np.testing.assert_allclose(volume.affine_lps, affine, atol=1e-4)
    # ... and it reads as the classic series of the same slices would.
    for f in range(n):
        slope, intercept = rescale_of_frame[f]
        classic = Dataset()
        classic.file_meta = FileMetaDataset()
        classic.file_meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
        classic.file_meta.MediaStorageSOPInstanceUID = classic.SOPInstanceUID = writers.make_uid("classic", f)
        classic.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        for keyword in ("Modality", "StudyInstanceUID", "SeriesInstanceUID", "SamplesPerPixel",
                        "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
                        "PixelRepresentation"):
            setattr(classic, keyword, ds.data_element(keyword).value)
        classic.SOPClassUID = pydicom.uid.MRImageStorage
        classic.ImagePositionPatient = frames[f].PlanePositionSequence[0].ImagePositionPatient
        classic.ImageOrientationPatient = orientation.ImageOrientationPatient
        classic.PixelSpacing = measures.PixelSpacing
        classic.RescaleSlope, classic.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        classic.PixelData = stored[f].tobytes()
        (tmp_path / "classic").mkdir(exist_ok=True)
        classic.save_as(tmp_path / "classic" / f"c{f}.dcm", enforce_file_format=True)
    classic_volume = dicom_series.load_series(_only_series(tmp_path / "classic"))
    np.testing.assert_array_equal(canonical.to_canonical(volume).data, canonical.to_canonical(classic_volume).data)
    np.testing.assert_allclose(volume.affine_lps, classic_volume.affine_lps, atol=1e-4)


# -- 3. a real Philips Enhanced MR file against dcm2niix -------------------------------------------------------------

PHILIPS = Path(nib.__file__).parent / "nicom" / "tests" / "data" / "philips_mprage.dcm.gz"


def _dcm2niix(folder: Path, out: Path) -> nib.Nifti1Image:
    binary = Path(sys.executable).with_name("dcm2niix")
    out.mkdir()
    # -p n: Philips display scaling (RescaleSlope/Intercept), what the reader applies, not the 'precise' scaling.
    subprocess.run([str(binary), "-p", "n", "-z", "n", "-f", "converted", "-o", str(out), str(folder)], check=True,
                   capture_output=True)
    return nib.load(out / "converted.nii")


def test_philips_enhanced_mr_has_dcm2niix_geometry(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "philips_mprage.dcm").write_bytes(gzip.decompress(PHILIPS.read_bytes()))
    series, failures = dicom_series.find_series(tmp_path / "in")
    assert not failures and len(series) == 1 and series[0].part == 0
    assert len(series[0].slices) == 176 and dicom_series.is_sagittal(series[0].orientation)
    assert {s.pixel_spacing for s in series[0].slices} == {(1.0, 1.0)}
    volume = dicom_series.load_series(series[0])
    converted = _dcm2niix(tmp_path / "in", tmp_path / "out")
    assert volume.data.shape == (176, 256, 256) and sorted(converted.shape) == sorted(volume.data.shape)
    np.testing.assert_allclose(sorted(volume.spacing), sorted(converted.header.get_zooms()[:3]), atol=1e-3)
    # Index (a0, a1, a2) of ours -> world -> index of dcm2niix's: a signed permutation onto its grid.
    ours_to_theirs = np.linalg.inv(converted.affine) @ ref.LPS_TO_RAS @ volume.affine_lps
    whole = np.round(ours_to_theirs)
    np.testing.assert_allclose(ours_to_theirs, whole, atol=1e-3)
    permutation = np.abs(whole[:3, :3])
    assert (permutation.sum(axis=0) == 1).all() and (permutation.sum(axis=1) == 1).all()
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in volume.data.shape], indexing="ij")).reshape(3, -1)
    theirs = (whole[:3, :3] @ corners + whole[:3, 3:]).T
    assert sorted(map(tuple, theirs.astype(int))) == sorted(
        map(tuple, np.array(np.meshgrid(*[[0, n - 1] for n in converted.shape], indexing="ij")).reshape(3, -1).T))
    # The canonical frame: the first axis runs left to right, and the slab keeps its small tilt.
    scan = canonical.to_canonical(volume)
    assert scan.affine_lps[0, 0] < 0 and scan.affine_lps[2, 1] < 0 and scan.affine_lps[1, 2] > 0
    assert scan.obliquity_deg().max() < 5.0

    # The shipped pixels are zeroed: give a copy a pattern (cropped in plane, every frame kept) so that each
    # frame's place and rescale show up in the values, and compare voxel by voxel through world coordinates.
    dataset = pydicom.dcmread(tmp_path / "in" / "philips_mprage.dcm")
    rows, cols = 24, 20  # the first voxel stays where ImagePositionPatient says
    f, j, i = np.meshgrid(np.arange(176), np.arange(rows), np.arange(cols), indexing="ij")
    dataset.Rows, dataset.Columns = rows, cols
    values = f * 17 + (j * 3 + i * 5) % 16 + 1  # under 2**12: BitsStored is 12
    assert int(dataset.BitsStored) == 12 and values.max() < 4096
    dataset.PixelData = values.astype(np.uint16).tobytes()
    (tmp_path / "pattern").mkdir()
    dataset.save_as(tmp_path / "pattern" / "philips_pattern.dcm")
    pattern = dicom_series.load_series(_only_series(tmp_path / "pattern"))
    np.testing.assert_allclose(pattern.affine_lps, volume.affine_lps, atol=1e-6)
    ours, theirs = ref.values_at_world(pattern.data, pattern.affine_lps[:, [2, 1, 0, 3]],
                                       _dcm2niix(tmp_path / "pattern", tmp_path / "pattern_out"))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-3)
    assert ours.min() == pytest.approx(2.10793650793650, rel=1e-6)  # stored 1 times the Philips RescaleSlope


# -- 4. multi-frame files without per-frame geometry are refused, not a crash ---------------------------------------

def _emri_small_like(path: Path) -> None:
    """What matters of pydicom's emri_small.dcm: Enhanced MR, 10 frames of 64x64, no functional groups."""
    ds = _enhanced_mr("emri-like")
    ds.SpacingBetweenSlices = "1.2"
    ds.NumberOfFrames, ds.Rows, ds.Columns = 10, 64, 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.zeros((10, 64, 64), np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_multiframe_without_frame_geometry_is_a_file_failure(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    # emri_small.dcm is in pydicom's external data (the pydicom-data package), not in pydicom's wheel: without
    # it, a look-up would try the network. The stand-in below has the same structure.
    real = pydicom.data.get_testdata_file("emri_small.dcm", download=False)
    if real is not None:
        (folder / "emri_small.dcm").write_bytes(Path(real).read_bytes())
    _emri_small_like(folder / "emri_small_like.dcm")
    # One frame of a good multi-frame file without its position; and per-frame groups one short of its frames.
    acq = _small_acquisition()
    good = _multiframe(tmp_path / "good.dcm", [pydicom.dcmread(p) for p in _classic(tmp_path / "classic", acq)])
    no_position = pydicom.dcmread(tmp_path / "good.dcm")
    del no_position.PerFrameFunctionalGroupsSequence[4].PlanePositionSequence
    no_position.SOPInstanceUID = no_position.file_meta.MediaStorageSOPInstanceUID = writers.make_uid("no-position")
    no_position.save_as(folder / "no_position.dcm")
    short = pydicom.dcmread(tmp_path / "good.dcm")
    del short.PerFrameFunctionalGroupsSequence[-1]
    short.SOPInstanceUID = short.file_meta.MediaStorageSOPInstanceUID = writers.make_uid("short")
    short.save_as(folder / "short.dcm")
    assert len(good.PerFrameFunctionalGroupsSequence) == acq.n_slices

    series, failures = dicom_series.find_series(folder)
    assert series == []
    codes = {f.path.name: f.code for f in failures}
    expected = {"emri_small_like.dcm", "no_position.dcm", "short.dcm"} | ({"emri_small.dcm"} if real else set())
    assert codes == {name: "no_frame_geometry" for name in expected}
    for failure in failures:  # spinejax's words: no path in the message
        assert str(folder) not in failure.message and failure.path.name not in failure.message


# -- 5. two stacks in one series: the sagittal one is the series ----------------------------------------------------

def test_sagittal_stack_is_part_0_when_a_multiframe_series_holds_two_stacks(tmp_path):
    acq = _small_acquisition(6.0, rescale_slope=0.5, rescale_intercept=3.0)
    sagittal = [pydicom.dcmread(p) for p in _classic(tmp_path / "sagittal", acq)]
    reference = canonical.to_canonical(dicom_series.load_series(_only_series(tmp_path / "sagittal")))
    # An axial stack of the same matrix size, its own instances, in the sagittal series' SeriesInstanceUID; with
    # more slices than the sagittal one, so that only being sagittal makes the sagittal stack the series.
    axial_acq = dataclasses.replace(acq, row_dir=(1.0, 0.0, 0.0), col_dir=(0.0, 1.0, 0.0), n_slices=9,
                                    instance_order=tuple(range(9)), origin=(-15.0, -25.0, 40.0))
    axial = []
    for path in _classic(tmp_path / "axial", axial_acq):
        localizer = pydicom.dcmread(path)
        localizer.SOPInstanceUID = localizer.file_meta.MediaStorageSOPInstanceUID = writers.make_uid("ax", path.name)
        localizer.save_as(path)
        axial.append(localizer)
    axial_reference = dicom_series.load_series(_only_series(tmp_path / "axial"))

    # (a) one file, the axial frames first, in the middle and last, interleaved with the sagittal ones.
    mixed = [*axial[:3], *sagittal[:4], *axial[3:6], *sagittal[4:], *axial[6:]]
    converted = _multiframe(tmp_path / "one_file" / "both.dcm", mixed, keep_order=True)
    assert int(converted.NumberOfFrames) == 16
    # (b) two multi-frame files of one SeriesInstanceUID; the localizer's file sorts first.
    _multiframe(tmp_path / "two_files" / "a_localizer.dcm", axial)
    _multiframe(tmp_path / "two_files" / "b_sagittal.dcm", sagittal)

    for case, sagittal_frames, axial_frames in [("one_file", {3, 4, 5, 6, 10, 11, 12}, {0, 1, 2, 7, 8, 9, 13, 14, 15}),
                                                ("two_files", set(range(7)), set(range(9)))]:
        series, failures = dicom_series.find_series(tmp_path / case)
        assert not failures, case
        assert [(s.part, len(s.slices), dicom_series.is_sagittal(s.orientation)) for s in series] == [
            (0, 7, True), (1, 9, False)], case
        assert {s.series_uid for s in series} == {WHO.series_uid}
        assert {s.frame for s in series[0].slices} == sagittal_frames, case
        assert {s.frame for s in series[1].slices} == axial_frames, case
        loaded = canonical.to_canonical(dicom_series.load_series(series[0]))
        np.testing.assert_array_equal(loaded.data, reference.data, err_msg=case)
        np.testing.assert_allclose(loaded.affine_lps, reference.affine_lps, rtol=0, atol=1e-4, err_msg=case)
        localizer = dicom_series.load_series(series[1])
        np.testing.assert_array_equal(localizer.data, axial_reference.data, err_msg=case)
        np.testing.assert_allclose(localizer.affine_lps, axial_reference.affine_lps, atol=1e-4, err_msg=case)


# -- more of the same promise: per-slice rescale, copies, and pixel spacing per frame -------------------------------

def test_per_slice_rescale_and_copies_of_a_multiframe_file(tmp_path):
    acq = _small_acquisition(6.0)
    paths = _classic(tmp_path / "classic", acq)
    for n, path in enumerate(paths):  # a rescale of its own in each classic file (as Philips classic exports have)
        dataset = pydicom.dcmread(path)
        dataset.RescaleSlope, dataset.RescaleIntercept = f"{0.5 + 0.25 * n:g}", f"{-10 * n:g}"
        dataset.save_as(path)
    classic = canonical.to_canonical(dicom_series.load_series(_only_series(tmp_path / "classic")))
    converted = _multiframe(tmp_path / "multi" / "m.dcm", [pydicom.dcmread(p) for p in paths], keep_order=True)
    assert all("PixelValueTransformationSequence" in frame for frame in converted.PerFrameFunctionalGroupsSequence)
    enhanced = canonical.to_canonical(dicom_series.load_series(_only_series(tmp_path / "multi")))
    np.testing.assert_array_equal(enhanced.data, classic.data)
    # A byte copy and a symlink of the multi-frame file: its frames are counted once.
    (tmp_path / "multi" / "a_copy.dcm").write_bytes((tmp_path / "multi" / "m.dcm").read_bytes())
    (tmp_path / "multi" / "z_link.dcm").symlink_to(tmp_path / "multi" / "m.dcm")
    series, failures = dicom_series.find_series(tmp_path / "multi")
    assert [(s.part, len(s.slices), len(s.files)) for s in series] == [(0, acq.n_slices, 1)]
    assert sorted(f.code for f in failures) == ["duplicate_instance", "duplicate_instance"]
    np.testing.assert_array_equal(canonical.to_canonical(dicom_series.load_series(series[0])).data, classic.data)


def test_a_frame_with_another_pixel_spacing_is_not_silently_given_the_first_frames(tmp_path):
    acq = _small_acquisition()
    datasets = [pydicom.dcmread(p) for p in _classic(tmp_path / "classic", acq)]
    datasets[2].PixelSpacing = ["0.6", "0.6"]  # half the others' 1.2461 mm: not on the same grid
    converted = _multiframe(tmp_path / "multi" / "m.dcm", datasets, keep_order=True)
    spacings = {tuple(float(v) for v in frame.PixelMeasuresSequence[0].PixelSpacing)
                for frame in converted.PerFrameFunctionalGroupsSequence}
    assert spacings == {(0.6, 0.6), tuple(float(v) for v in datasets[0].PixelSpacing)}
    series, failures = dicom_series.find_series(tmp_path / "multi")
    assert not failures
    # Either the odd frame is split off, or a group mixing spacings is refused: one spacing per Volume.
    for one in series:
        mixed = sorted({s.pixel_spacing for s in one.slices})
        if len(mixed) > 1:
            try:
                volume = dicom_series.load_series(one)
            except dicom_series.SeriesError:
                continue
            pytest.fail(f"frames of pixel spacings {mixed} loaded as one Volume of spacing "
                        f"{np.round(volume.spacing, 4).tolist()}")
