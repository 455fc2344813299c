"""What one ArrayRecord record holds, and how it is serialised: the contract between writer and reader.

data_prep.build_records writes records with `encode`; spinejax's input pipeline reads them with `decode`.
This module is the only place the layout lives, so writer and reader cannot drift.

A record is bytes:  b"SJR1" | uint32 little-endian header length | JSON header | array bytes
The JSON header holds SCHEMA_VERSION, the scalar fields, and for each array its dtype, shape, byte offset and
how it is stored; arrays follow, little-endian. No pickle: any language can read it.

Storage (schema 4): the mask as bits (numpy.packbits of the C-ordered mask), and the volume and labels as their
values inside the mask only, in C order ("inside"): both are 0 outside it, and the mask holds 10-25% of a
region's grid, so a record is about a sixth of its dense size (0.13-0.20) and the training reader decompresses
that much less (README "Training"). `decode` gives the dense arrays whatever the storage; `decode_masked` gives
the mask and the in-mask values, which is all augmentation needs. Schema 3 records (every array dense) still read.
"""

from __future__ import annotations

import json
import struct

import numpy as np

MAGIC = b"SJR1"
SCHEMA_VERSION = 4  # 2: label maps added; 3: levels_present, coded site; 4: mask as bits, in-mask values only
READABLE_VERSIONS = (3, 4)

# Arrays of a record: name -> (dtype, meaning).
ARRAYS = {
    "volume": (np.float16, "[slices, rows, cols] T2 signal z-scored within the spine mask, 0 outside; "
                           "canonical axes left->right, superior->inferior, anterior->posterior"),
    "mask": (np.uint8, "[slices, rows, cols] 1 inside the (dilated) spine mask, else 0"),
    "labels": (np.uint8, "[slices, rows, cols] TotalSpineSeg labels (data_prep/spine_labels.py) on the same grid, "
                         "inside the mask (0 outside), "
                         "nearest-neighbour resampled; for attributing a model's attention to regions"),
    "spacing_mm": (np.float32, "[3] voxel spacing along the three axes, mm"),
}
# How each array is stored (schema 4): 'bits' (packed 0/1), 'inside' (the values where the mask is 1), 'dense'.
STORAGE = {"volume": "inside", "mask": "bits", "labels": "inside", "spacing_mm": "dense"}
# Scalars of a record: name -> (python type, meaning).
SCALARS = {
    "schema_version": (int, "SCHEMA_VERSION of the writer"),
    "plan_hash": (str, "fingerprint of the preprocessing plan; readers refuse records of another plan"),
    "subject_key": (str, "keyed hash of the subject id (spinejax.cohort.pseudonym)"),
    "series_key": (str, "keyed hash of the series id"),
    "split": (str, "'train', 'validation' or 'test' (by subject)"),
    "region": (str, "'whole', 'cervical', 'thoracic' or 'lumbar'"),
    "age": (float, "chronological age at the scan, years"),
    "sex": (str, "'F', 'M', 'O' or '' when unknown"),
    "site": (str, "acquisition site: its declared code, or a keyed code 'site-xxxxxxxx' ('' when unknown)"),
    "levels_present": (str, "the region's vertebrae and discs present in the mask, comma-separated, top to "
                            "bottom ('C2,C2-C3,...'); spinejax.scans.preprocess.region_levels lists all of them"),
}


def encode(fields: dict) -> bytes:
    """Serialises one record; `fields` must hold every name of ARRAYS and SCALARS, arrays dense.

    Raises ValueError when the mask is not 0/1 or the volume or labels are non-zero outside it: storing only the
    in-mask values would then lose data.
    """
    missing = (set(ARRAYS) | set(SCALARS)) - set(fields)
    if missing:
        raise KeyError(f"record lacks {sorted(missing)}")
    header = {"schema_version": SCHEMA_VERSION, "scalars": {}, "arrays": {}}
    for name, (kind, _) in SCALARS.items():
        header["scalars"][name] = kind(fields[name])
    mask = np.asarray(fields["mask"])
    if mask.size and not np.isin(mask, (0, 1)).all():
        raise ValueError("record mask holds values other than 0 and 1")
    inside = mask.astype(bool)
    chunks, offset = [], 0
    for name, (dtype, _) in ARRAYS.items():
        dense = np.asarray(fields[name], dtype=np.dtype(dtype).newbyteorder("<"))
        storage = STORAGE[name]
        if storage == "inside":
            if dense.shape != inside.shape:
                raise ValueError(f"record {name} has shape {dense.shape}, its mask {inside.shape}")
            if np.any(dense[~inside]):
                raise ValueError(f"record {name} is non-zero outside the mask")
            stored = dense[inside]
        elif storage == "bits":
            stored = np.packbits(inside.reshape(-1))
        else:
            stored = np.ascontiguousarray(dense)
        header["arrays"][name] = {"dtype": dense.dtype.str, "shape": list(dense.shape), "offset": offset,
                                  "storage": storage, "stored_count": int(stored.size)}
        chunks.append(stored.tobytes())
        offset += stored.nbytes
    text = json.dumps(header, sort_keys=True).encode()
    return MAGIC + struct.pack("<I", len(text)) + text + b"".join(chunks)


def decode(record: bytes, expected_plan_hash: str | None = None) -> dict:
    """Fields of one record, every array dense ([slices, rows, cols] as ARRAYS says; read-only).

    Raises ValueError for bytes that are not a record, another schema version, (when `expected_plan_hash` is
    given) a record preprocessed under another plan, or in-mask arrays whose length is not the mask's count.
    """
    fields, stored, shapes = _parse(record, expected_plan_hash)
    inside = _inside(fields, stored, shapes)
    for name, array in stored.items():
        shape, storage = shapes[name]
        if storage == "inside":
            array = np.zeros(shape, array.dtype)
            array[inside] = stored[name]
        elif storage == "bits":
            array = inside.view(np.uint8)
        array.flags.writeable = False
        fields[name] = array
    return fields


def decode_masked(record: bytes, expected_plan_hash: str | None = None) -> dict:
    """The scalars, `mask` (bool [slices, rows, cols]), `volume_inside` (float16 [n]: the volume at the mask's n
    True voxels, C order), `labels_inside` (uint8 [n]) and `spacing_mm` of one record; read-only.

    The training reader's path: no dense volume is made. Errors as `decode`.
    """
    fields, stored, shapes = _parse(record, expected_plan_hash)
    inside = _inside(fields, stored, shapes)
    for name in ("volume", "labels"):
        array = stored[name] if shapes[name][1] == "inside" else stored[name][inside]
        array.flags.writeable = False
        fields[f"{name}_inside"] = array
    inside.flags.writeable = False
    stored["spacing_mm"].flags.writeable = False  # a view into the caller's record, which may be writable
    fields["mask"], fields["spacing_mm"] = inside, stored["spacing_mm"]
    return fields


def _parse(record: bytes, expected_plan_hash: str | None):
    """(scalars, {name: stored array}, {name: (dense shape, storage)}) of one record, checked."""
    if record[:4] != MAGIC:
        raise ValueError("not a spinejax record (bad magic bytes)")
    (length,) = struct.unpack("<I", record[4:8])
    header = json.loads(record[8:8 + length])
    if header["schema_version"] not in READABLE_VERSIONS:
        raise ValueError(f"record schema version {header['schema_version']}, this code reads {READABLE_VERSIONS}")
    fields = dict(header["scalars"])
    if expected_plan_hash is not None and fields["plan_hash"] != expected_plan_hash:
        raise ValueError(f"record {fields['series_key']} ({fields['region']}) was preprocessed with plan "
                         f"{fields['plan_hash']}, expected {expected_plan_hash}: rebuild the records")
    body = memoryview(record)[8 + length:]
    stored, shapes = {}, {}
    for name, spec in header["arrays"].items():
        dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
        storage = spec.get("storage", "dense")  # schema 3: every array dense
        count = int(spec["stored_count"]) if "stored_count" in spec else int(np.prod(shape))
        array = np.frombuffer(body, np.uint8 if storage == "bits" else dtype, count, spec["offset"])
        stored[name] = array.reshape(shape) if storage == "dense" else array
        shapes[name] = (shape, storage)
    return fields, stored, shapes


def _inside(fields: dict, stored: dict, shapes: dict) -> np.ndarray:
    """The mask as bool [slices, rows, cols], checked against the lengths of the in-mask arrays."""
    shape, storage = shapes["mask"]
    if storage == "bits":
        inside = np.unpackbits(stored["mask"], count=int(np.prod(shape))).view(bool).reshape(shape)
    else:
        inside = stored["mask"] != 0
    counts = {stored[name].size for name, (_, kind) in shapes.items() if kind == "inside"}
    if counts and counts != {int(np.count_nonzero(inside))}:
        raise ValueError(f"record {fields['series_key']}: in-mask arrays of {sorted(counts)} values, mask of "
                         f"{int(np.count_nonzero(inside))}")
    return inside
