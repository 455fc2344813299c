"""The record format (spinejax.records): dense arrays in, the same dense arrays out, stored as the mask's bits and
the in-mask values; schema 3 records (all dense) still read; what would lose data is refused."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from spinejax import records


def _fields(seed: int = 0, shape=(6, 20, 9)) -> dict:
    rng = np.random.default_rng(seed)
    mask = (rng.random(shape) < 0.3).astype(np.uint8)
    volume = np.where(mask, rng.normal(0, 1, shape), 0).astype(np.float16)
    volume[mask.astype(bool) & (rng.random(shape) < 0.05)] = 0  # in-mask zeros stay in-mask values
    labels = np.where(mask, rng.integers(0, 60, shape), 0).astype(np.uint8)
    return {"volume": volume, "mask": mask, "labels": labels, "spacing_mm": np.array([4, 4, 4.5], np.float32),
            "plan_hash": "p1", "subject_key": "s" * 16, "series_key": "k" * 16, "split": "train",
            "region": "whole", "age": 61.25, "sex": "F", "site": "site-0a1b2c3d", "levels_present": "C2,C2-C3",
            "schema_version": records.SCHEMA_VERSION}


def _v3(fields: dict) -> bytes:
    """A schema 3 record, every array dense, as the earlier writer made it (the layout in records' docstring)."""
    header = {"schema_version": 3, "scalars": {k: fields[k] for k in records.SCALARS} | {"schema_version": 3},
              "arrays": {}}
    chunks, offset = [], 0
    for name, (dtype, _) in records.ARRAYS.items():
        array = np.ascontiguousarray(fields[name], dtype=np.dtype(dtype).newbyteorder("<"))
        header["arrays"][name] = {"dtype": array.dtype.str, "shape": list(array.shape), "offset": offset}
        chunks.append(array.tobytes())
        offset += array.nbytes
    text = json.dumps(header, sort_keys=True).encode()
    return records.MAGIC + struct.pack("<I", len(text)) + text + b"".join(chunks)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dense_arrays_come_back_exactly_from_bits_and_in_mask_values(seed):
    fields = _fields(seed)
    blob = records.encode(fields)
    dense_size = sum(np.asarray(fields[n]).nbytes for n in records.ARRAYS)
    assert len(blob) < 0.6 * dense_size  # 30% of voxels in the mask here; 10-25% in real regions
    for decoded in (records.decode(blob, expected_plan_hash="p1"), records.decode(_v3(fields))):
        for name, (dtype, _) in records.ARRAYS.items():
            assert decoded[name].dtype == dtype and decoded[name].shape == np.shape(fields[name])
            np.testing.assert_array_equal(decoded[name], fields[name])
            assert not decoded[name].flags.writeable
        assert decoded["age"] == 61.25 and decoded["levels_present"] == "C2,C2-C3"
    inside = fields["mask"].astype(bool)
    for masked in (records.decode_masked(bytearray(blob)), records.decode_masked(_v3(fields))):
        assert masked["mask"].dtype == bool
        assert not any(masked[k].flags.writeable for k in ("mask", "volume_inside", "labels_inside", "spacing_mm"))
        np.testing.assert_array_equal(masked["mask"], inside)
        np.testing.assert_array_equal(masked["volume_inside"], fields["volume"][inside])
        np.testing.assert_array_equal(masked["labels_inside"], fields["labels"][inside])
        assert masked["volume_inside"].dtype == np.float16 and masked["series_key"] == "k" * 16


def test_an_empty_mask_and_a_full_mask_round_trip():
    for fill in (0, 1):
        fields = _fields()
        fields["mask"] = np.full(fields["mask"].shape, fill, np.uint8)
        fields["volume"] = fields["volume"] * fill + np.float16(fill)
        fields["labels"] = (fields["labels"] + 1) * fill
        decoded = records.decode(records.encode(fields))
        for name in ("volume", "mask", "labels"):
            np.testing.assert_array_equal(decoded[name], np.asarray(fields[name], decoded[name].dtype))


def test_what_would_lose_data_or_is_not_a_record_is_refused():
    fields = _fields()
    outside = ~fields["mask"].astype(bool)
    for name in ("volume", "labels"):
        bad = dict(fields, **{name: fields[name].copy()})
        bad[name][np.unravel_index(np.flatnonzero(outside)[3], outside.shape)] = 2
        with pytest.raises(ValueError, match=f"{name} is non-zero outside the mask"):
            records.encode(bad)
    with pytest.raises(ValueError, match="other than 0 and 1"):
        records.encode(dict(fields, mask=fields["mask"] * 255))
    with pytest.raises(KeyError, match="age"):
        records.encode({k: v for k, v in fields.items() if k != "age"})
    blob = records.encode(fields)
    with pytest.raises(ValueError, match="bad magic"):
        records.decode(b"XXXX" + blob[4:])
    with pytest.raises(ValueError, match="rebuild the records"):
        records.decode_masked(blob, expected_plan_hash="another-plan")
    # A header whose in-mask arrays disagree with its mask (a writer bug or a corrupted record) is caught.
    (length,) = struct.unpack("<I", blob[4:8])
    header = json.loads(blob[8:8 + length])
    header["arrays"]["labels"]["stored_count"] -= 1
    text = json.dumps(header, sort_keys=True).encode()
    broken = records.MAGIC + struct.pack("<I", len(text)) + text + blob[8 + length:]
    with pytest.raises(ValueError, match="in-mask arrays of"):
        records.decode(broken)
    header["schema_version"] = 2
    text = json.dumps(header, sort_keys=True).encode()
    with pytest.raises(ValueError, match="schema version 2"):
        records.decode(records.MAGIC + struct.pack("<I", len(text)) + text + blob[8 + length:])


def test_a_site_mask_with_labels_outside_the_spine_still_makes_a_record():
    # A site's segmentation may carry structures spinejax does not know (label 250 here, away from the spine):
    # the record keeps labels where the model sees the image, so encoding cannot refuse it.
    from spinejax.scans import preprocess, spine_labels

    plan = preprocess.Plan(spacing_mm=(4.0, 4.0, 4.0), grids=(("whole", (8, 40, 12)),), mask_dilation_mm=4.0,
                           clip_percentiles=(0.5, 99.5), crop_margin_mm=8.0, min_slices=4,
                           max_missing_level_share=1.0)
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, (10, 50, 16)).astype(np.float32)
    label = np.zeros(image.shape, np.int32)
    label[3:7, 10:14, 5:9] = spine_labels.vertebra_label("L3")
    label[3:7, 16:20, 5:9] = spine_labels.vertebra_label("L4")
    label[0:2, 30:34, 0:3] = 250  # an unknown structure far from the spine's dilated mask
    label[3:7, 14:16, 5:9] = 256 + spine_labels.vertebra_label("L3")  # one inside it, that uint8 would wrap
    mask = np.isin(label, [spine_labels.vertebra_label("L3"), spine_labels.vertebra_label("L4")])
    mask[3:7, 14:16, 5:9] = True
    region = preprocess.cut_region(image, label, mask, plan, "whole")
    assert 250 in label and 250 not in region["labels"]
    assert set(np.unique(region["labels"])) == {0, spine_labels.vertebra_label("L3"), spine_labels.vertebra_label("L4")}
    assert (region["labels"] == spine_labels.vertebra_label("L3")).sum() == 4 * 4 * 4
    assert (region["labels"][region["mask"] == 0] == 0).all()
    decoded = records.decode(records.encode({**_fields(), **region}))
    np.testing.assert_array_equal(decoded["labels"], region["labels"])
