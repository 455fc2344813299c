"""Reading scans into the canonical frame: same grid in any description -> same array; bad input -> reason."""

from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest

from data_prep.phantom import acquisition, writers
from spinejax.scans import canonical, dicom_series

WHO = writers.Identity("DOE^JANE", "MRN1", "19700101", "F", 50, "A1", "20200101", writers.make_uid("st"),
                       writers.make_uid("se"), writers.make_uid("fr"), 3, "TEST")


def _world_value(points: np.ndarray) -> np.ndarray:
    """An asymmetric function of LPS position (mm): every voxel knows where it is."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return 1000.0 + 3.0 * x + 2.0 * y + 1.0 * z + 0.01 * x * z


def _small_acquisition(**changes) -> acquisition.Acquisition:
    rng = np.random.default_rng(3)
    acq = acquisition.draw_acquisition(rng, "site_B", 600.0, 0.0)
    acq = dataclasses.replace(acq, rows=40, cols=24, n_slices=7, instance_order=(3, 0, 6, 1, 4, 2, 5),
                              **changes)
    return acq


def _stored(acq: acquisition.Acquisition) -> np.ndarray:
    k, j, i = np.meshgrid(*(np.arange(n) for n in (acq.n_slices, acq.rows, acq.cols)), indexing="ij")
    ijk1 = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(float)
    points = ijk1 @ acq.affine_lps().T
    return writers.to_stored(_world_value(points[..., :3]), acq)


def _same_grid_described_otherwise(acq: acquisition.Acquisition) -> list[acquisition.Acquisition]:
    """The same voxel centres, described with flipped row/column directions and other slice orders."""
    row, col, normal = np.asarray(acq.row_dir), np.asarray(acq.col_dir), acq.normal
    o = np.asarray(acq.origin)
    far_col, far_row = (acq.cols - 1) * acq.col_spacing * row, (acq.rows - 1) * acq.row_spacing * col
    far_slice = (acq.n_slices - 1) * acq.slice_spacing * normal
    n = acq.n_slices
    return [
        acq,
        dataclasses.replace(acq, instance_order=tuple(range(n))[::-1]),
        dataclasses.replace(acq, instance_order=tuple(range(0, n, 2)) + tuple(range(1, n, 2))),
        dataclasses.replace(acq, row_dir=tuple(-row), origin=tuple(o + far_col + far_slice)),
        dataclasses.replace(acq, col_dir=tuple(-col), origin=tuple(o + far_row + far_slice)),
        dataclasses.replace(acq, row_dir=tuple(-row), col_dir=tuple(-col), origin=tuple(o + far_col + far_row)),
    ]


@pytest.mark.parametrize("tilt_deg", [0.0, 6.0])
def test_every_description_of_a_grid_gives_the_same_canonical_array(tmp_path, tilt_deg):
    base = _small_acquisition()
    t = np.radians(tilt_deg)
    rotate = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    base = dataclasses.replace(base, row_dir=tuple(rotate @ [0, 1, 0]), col_dir=tuple(rotate @ [0, 0, -1]))
    results = []
    for n, acq in enumerate(_same_grid_described_otherwise(base)):
        stored = _stored(acq)
        files = writers.write_dicom_series(tmp_path / f"d{n}", stored, acq, WHO,
                                           [f"x{m}" for m in range(acq.n_slices)])
        series, failures = dicom_series.find_series(tmp_path / f"d{n}")
        assert not failures and len(series) == 1 and len(series[0].files) == len(files)
        results.append(canonical.to_canonical(dicom_series.load_series(series[0])))
        for axes, flips in [((2, 1, 0), (False, False, False)), ((1, 2, 0), (True, False, True))]:
            layout = dataclasses.replace(acq, nifti_axes=axes, nifti_flips=flips)
            path = tmp_path / f"n{n}{axes}{flips}.nii.gz"
            writers.atomic_write(path, writers.nifti_bytes(stored, layout, acq.rescale_slope,
                                                           acq.rescale_intercept))
            results.append(canonical.to_canonical(canonical.load_nifti(path)))
    first = results[0]
    for other in results[1:]:
        np.testing.assert_array_equal(other.data, first.data)
        np.testing.assert_allclose(other.affine_lps, first.affine_lps, atol=1e-3)
    # The axes mean what the canonical frame says: left->right, superior->inferior, anterior->posterior.
    a = first.affine_lps
    assert a[0, 0] < 0 and a[2, 1] < 0 and a[1, 2] > 0
    assert np.argmax(np.abs(a[:3, :3]), axis=0).tolist() == [0, 2, 1]
    np.testing.assert_allclose(first.spacing, [base.slice_spacing, base.row_spacing, base.col_spacing], atol=1e-3)
    assert first.obliquity_deg()[0] == pytest.approx(0.0, abs=1e-3)
    assert first.obliquity_deg()[1] == pytest.approx(tilt_deg, abs=1e-2)
    # Each voxel holds the value of its own position (within the rescale's rounding).
    index = np.stack(np.meshgrid(*(np.arange(s) for s in first.data.shape), indexing="ij"), -1).reshape(-1, 3)
    points = np.c_[index, np.ones(len(index))] @ a.T
    np.testing.assert_allclose(first.data.reshape(-1), _world_value(points[:, :3]),
                               atol=base.rescale_slope / 2 + 0.01)  # rounding to stored integers


def _write(tmp_path: Path, name: str, acq: acquisition.Acquisition, stored=None) -> Path:
    folder = tmp_path / name
    writers.write_dicom_series(folder, _stored(acq) if stored is None else stored, acq, WHO,
                               [f"s{m}.dcm" for m in range(acq.n_slices)])
    return folder


def _load_only_series(folder: Path):
    series, failures = dicom_series.find_series(folder)
    assert not failures and len(series) == 1
    return dicom_series.load_series(series[0])


def test_missing_duplicated_and_uneven_slices_are_refused_with_the_reason(tmp_path):
    acq = _small_acquisition()
    missing = _write(tmp_path, "missing", acq)
    (missing / "s3.dcm").unlink()
    with pytest.raises(dicom_series.SeriesError, match="missing slice"):
        _load_only_series(missing)
    duplicated = _write(tmp_path, "duplicated", acq)
    again = pydicom.dcmread(duplicated / "s2.dcm")  # the same position acquired twice: another instance
    again.SOPInstanceUID = writers.make_uid("again")
    again.save_as(duplicated / "again.dcm")
    with pytest.raises(dicom_series.SeriesError, match="duplicated slice position") as refused:
        _load_only_series(duplicated)
    assert refused.value.code == "duplicate_positions"
    copied = _write(tmp_path, "copied", acq)  # a byte copy and a symlink of one file: the same instance
    shutil.copy(copied / "s2.dcm", tmp_path / "copy_elsewhere.dcm")
    (copied / "zz_link.dcm").symlink_to(copied / "s5.dcm")
    shutil.move(tmp_path / "copy_elsewhere.dcm", copied / "a_copy.dcm")
    series, failures = dicom_series.find_series(copied)
    assert len(series) == 1 and len(series[0].slices) == acq.n_slices
    assert sorted((f.path.name, f.code) for f in failures) == [("s2.dcm", "duplicate_instance"),
                                                              ("zz_link.dcm", "duplicate_instance")]
    assert dicom_series.load_series(series[0]).data.shape == (7, 40, 24)
    uneven = _write(tmp_path, "uneven", acq)
    moved = pydicom.dcmread(uneven / "s4.dcm")
    position = np.array(moved.ImagePositionPatient, float) + 0.3 * acq.slice_spacing * acq.normal
    moved.ImagePositionPatient = [f"{v:.4f}" for v in position]
    moved.save_as(uneven / "s4.dcm")
    with pytest.raises(dicom_series.SeriesError, match="uneven slice spacing"):
        _load_only_series(uneven)
    assert _load_only_series(_write(tmp_path, "fine", acq)).data.shape == (7, 40, 24)


def test_mixed_orientations_split_a_series_and_axial_is_not_sagittal(tmp_path):
    acq = _small_acquisition()
    folder = _write(tmp_path, "mixed", acq)
    axial = dataclasses.replace(acq, row_dir=(1.0, 0.0, 0.0), col_dir=(0.0, 1.0, 0.0), n_slices=3,
                                instance_order=(0, 1, 2))
    for path in writers.write_dicom_series(folder / "ax", _stored(axial), axial, WHO, [f"a{m}.dcm" for m in range(3)]):
        localizer = pydicom.dcmread(path)  # its own instances, in the sagittal series' SeriesInstanceUID
        localizer.SOPInstanceUID = localizer.file_meta.MediaStorageSOPInstanceUID = writers.make_uid("ax", path.name)
        localizer.save_as(path)
    series, failures = dicom_series.find_series(folder)
    assert not failures and len(series) == 2
    # The sagittal series is part 0 (the series), the localizer part 1, although the localizer's folder
    # sorts first.
    assert [(s.part, len(s.files), dicom_series.is_sagittal(s.orientation)) for s in series] == [(0, 7, True),
                                                                                                  (1, 3, False)]
    assert [dicom_series.is_sagittal(s.orientation) for s in series].count(True) == 1


def test_real_broken_and_compressed_files_from_pydicom(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "empty").write_bytes(b"")
    (corpus / "notes.txt").write_text("not an image")
    for name in ("MR_truncated.dcm", "rtplan.dcm", "DICOMDIR"):
        shutil.copy(pydicom.data.get_testdata_file(name), corpus / name)
    series, failures = dicom_series.find_series(corpus)
    codes = {f.path.name: f.code for f in failures}
    assert codes["empty"] == codes["notes.txt"] == "not_dicom"
    assert codes["rtplan.dcm"] == codes["DICOMDIR"] == "no_image_geometry"
    # The truncated MR file has a header: it is found, and refused when its pixels are read.
    assert [s.files[0].name for s in series] == ["MR_truncated.dcm"]
    with pytest.raises(dicom_series.SeriesError, match="decoded"):
        dicom_series.load_series(series[0])
    assert len(series) + len(failures) == 5  # every file is accounted for

    reference = None
    for name in ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                 "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm"):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(pydicom.data.get_testdata_file(name), folder / name)
        volume = _load_only_series(folder)
        if reference is None:
            reference = volume.data
        np.testing.assert_array_equal(volume.data, reference, err_msg=name)


def _variants_of_mr_small() -> list[tuple[str, pydicom.Dataset]]:
    """MR_small.dcm rewritten with the bit layouts and frame counts a site's uncompressed files come in."""
    variants = []
    base = pydicom.dcmread(pydicom.data.get_testdata_file("MR_small.dcm"))
    raw = np.frombuffer(base.PixelData, "<u2")
    rng = np.random.default_rng(0)
    for signed in (0, 1):
        for stored in (16, 12, 10):
            ds = copy.deepcopy(base)
            ds.PixelRepresentation, ds.BitsStored, ds.HighBit = signed, stored, stored - 1
            junk = rng.integers(0, 2 ** 16, raw.size, dtype=np.uint16) & ~np.uint16(2 ** stored - 1)
            ds.PixelData = ((raw & np.uint16(2 ** stored - 1)) | junk).tobytes()  # garbage in the unused bits
            variants.append((f"signed={signed} stored={stored}", ds))
        ds = copy.deepcopy(base)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, signed
        ds.PixelData = rng.integers(0, 256, raw.size + 1, dtype=np.uint8).tobytes()  # odd length padded to even
        variants.append((f"8 bits signed={signed}", ds))
    ds = copy.deepcopy(base)
    ds.NumberOfFrames = 3
    ds.PixelData = np.concatenate([raw, raw[::-1], raw // 2]).tobytes()
    variants.append(("3 frames", ds))
    ds = copy.deepcopy(base)
    ds.PixelData = base.PixelData + b"\0\0\0\0"  # trailing bytes beyond the image
    variants.append(("trailing bytes", ds))
    for missing in ("PhotometricInterpretation", "SamplesPerPixel"):  # pydicom refuses these: so must the fast path
        ds = copy.deepcopy(base)
        del ds[missing]
        variants.append((f"no {missing}", ds))
    return variants


def test_uncompressed_pixels_are_read_as_pydicom_reads_them():
    # spinejax reads uncompressed little-endian pixel data itself (pydicom's per-file option handling was most
    # of a series' reading time); every other file goes through pydicom's decoders.
    folder = Path(pydicom.data.get_testdata_file("MR_small.dcm")).parent
    cases = [(path.name, pydicom.dcmread(path, force=True)) for path in sorted(folder.glob("*.dcm"))]
    cases += _variants_of_mr_small()
    fast = 0
    for name, ds in cases:
        try:
            expected = ds.pixel_array
        except Exception:  # noqa: BLE001 - not an image, or no decoder here: then neither may the fast path read it
            expected = None
        pixels = dicom_series.native_pixels(ds)
        if pixels is None:
            continue
        fast += 1
        assert expected is not None, name
        expected = expected.reshape(pixels.shape)
        assert pixels.dtype == expected.dtype, name
        np.testing.assert_array_equal(pixels, expected, err_msg=name)
    assert fast >= 14  # the grey-scale MR and CT files and every complete variant took the fast path
    refused = {name: dicom_series.native_pixels(ds) for name, ds in cases}
    for name in ("MR_small_bigendian.dcm", "MR_small_RLE.dcm", "SC_rgb_small_odd.dcm", "rtdose.dcm",
                 "MR_truncated.dcm", "examples_palette.dcm", "no PhotometricInterpretation", "no SamplesPerPixel"):
        # big-endian, compressed, colour, 32 bits, too short, a palette, incomplete: pydicom decides
        assert refused[name] is None, name


def test_nifti_with_nan_is_refused(tmp_path):
    import nibabel as nib

    data = np.ones((4, 5, 6), np.float32)
    data[1, 2, 3] = np.nan
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(ValueError, match="1 voxels are NaN"):
        canonical.load_nifti(path)


def test_whole_synthetic_cohort_reads_into_the_canonical_frame_with_its_masks(cohort, truth):
    series, failures = dicom_series.find_series(cohort / "dicom")
    assert not failures
    by_uid = {s.series_uid: s for s in series}
    for record in truth["series"]:
        if record["file_format"] == "dicom":
            scan = dicom_series.load_series(by_uid[record["series_id"]])
        else:
            scan = canonical.load_nifti(cohort / record["path"])
        scan = canonical.to_canonical(scan)
        mask = canonical.to_canonical(canonical.load_nifti(cohort / "masks" / f"{record['series_id']}.nii.gz",
                                                           is_label=True))
        assert scan.data.shape == mask.data.shape == (record["shape_kji"][0], *record["shape_kji"][1:])
        np.testing.assert_allclose(mask.affine_lps, scan.affine_lps, atol=1e-3)
        # The canonical rows run head to feet: the cord (label 1) starts above the sacrum (label 50).
        cord_rows, sacrum_rows = (np.flatnonzero((mask.data == label).any(axis=(0, 2))) for label in (1, 50))
        assert cord_rows.min() < sacrum_rows.min()
        # ... and columns run front to back: vertebral bodies lie anterior to the canal (label 2).
        body = np.argwhere(mask.data == 44)[:, 2].mean()  # L4
        canal = np.argwhere(mask.data == 2)[:, 2].mean()
        assert body < canal
