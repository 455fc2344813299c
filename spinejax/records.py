"""What one ArrayRecord record holds, and how it is serialised: the contract between writer and reader.

data_prep.build_records writes records with `encode`; spinejax's input pipeline reads them with `decode`.
This module is the only place the layout lives, so writer and reader cannot drift.

A record is bytes:  b"SJR1" | uint32 little-endian header length | JSON header | array bytes
The JSON header holds SCHEMA_VERSION, the scalar fields, and for each array its dtype, shape and byte
offset; arrays follow, C-ordered, little-endian. No pickle: any language can read it.
"""

from __future__ import annotations

import json
import struct

import numpy as np

MAGIC = b"SJR1"
SCHEMA_VERSION = 3  # 2: label maps added; 3: levels_present, coded site

# Arrays of a record: name -> (dtype, meaning).
ARRAYS = {
    "volume": (np.float16, "[slices, rows, cols] T2 signal z-scored within the spine mask, 0 outside; "
                           "canonical axes left->right, superior->inferior, anterior->posterior"),
    "mask": (np.uint8, "[slices, rows, cols] 1 inside the (dilated) spine mask, else 0"),
    "labels": (np.uint8, "[slices, rows, cols] TotalSpineSeg labels (data_prep/spine_labels.py) on the same grid, "
                         "nearest-neighbour resampled; for attributing a model's attention to regions"),
    "spacing_mm": (np.float32, "[3] voxel spacing along the three axes, mm"),
}
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
    """Serialises one record; `fields` must hold every name of ARRAYS and SCALARS."""
    missing = (set(ARRAYS) | set(SCALARS)) - set(fields)
    if missing:
        raise KeyError(f"record lacks {sorted(missing)}")
    header = {"schema_version": SCHEMA_VERSION, "scalars": {}, "arrays": {}}
    for name, (kind, _) in SCALARS.items():
        header["scalars"][name] = kind(fields[name])
    chunks, offset = [], 0
    for name, (dtype, _) in ARRAYS.items():
        array = np.ascontiguousarray(fields[name], dtype=np.dtype(dtype).newbyteorder("<"))
        header["arrays"][name] = {"dtype": array.dtype.str, "shape": list(array.shape), "offset": offset}
        chunks.append(array.tobytes())
        offset += array.nbytes
    text = json.dumps(header, sort_keys=True).encode()
    return MAGIC + struct.pack("<I", len(text)) + text + b"".join(chunks)


def decode(record: bytes, expected_plan_hash: str | None = None) -> dict:
    """Fields of one record (arrays are read-only views into `record`).

    Raises ValueError for bytes that are not a record, another schema version, or (when
    `expected_plan_hash` is given) a record preprocessed under another plan.
    """
    if record[:4] != MAGIC:
        raise ValueError("not a spinejax record (bad magic bytes)")
    (length,) = struct.unpack("<I", record[4:8])
    header = json.loads(record[8:8 + length])
    if header["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"record schema version {header['schema_version']}, this code reads {SCHEMA_VERSION}")
    fields = dict(header["scalars"])
    if expected_plan_hash is not None and fields["plan_hash"] != expected_plan_hash:
        raise ValueError(f"record {fields['series_key']} ({fields['region']}) was preprocessed with plan "
                         f"{fields['plan_hash']}, expected {expected_plan_hash}: rebuild the records")
    body = memoryview(record)[8 + length:]
    for name, spec in header["arrays"].items():
        dtype = np.dtype(spec["dtype"])
        count = int(np.prod(spec["shape"]))
        fields[name] = np.frombuffer(body, dtype, count, spec["offset"]).reshape(spec["shape"])
    return fields
