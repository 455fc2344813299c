"""Times build_records' stages on a cohort, and how fast a reader gets records back from the shards.

    python -m data_prep.records.benchmark --input=COHORT_DIR [--records=RECORDS_DIR] [--series=60]

Prints series per second (one core) for reading (DICOM or NIfTI to the canonical frame, with the mask), for
reading and resampling both to the plan's spacing, and for the whole per-series function (reading, checks, four
region crops, encoding), and records per second for random-access reads through grain's ArrayRecordDataSource
with decoding (from RECORDS_DIR, e.g. the default run's).

The peer: for the DICOM series among those timed, dcm2niix (the pinned pip package) converts the same files
to an uncompressed NIfTI without a sidecar (`-z n -b n`), one process per series as it is used, against
spinejax's reading of the same series to the canonical frame (the scan), and its reading and resampling (scan
and mask).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grain
import numpy as np
import pandas as pd
from absl import app, flags

from configs import records as records_config
from data_prep.records import build_records
from spinejax import records
from spinejax.scans import canonical, prepare, preprocess

FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    del argv
    cohort = Path(FLAGS.input)
    config = records_config.get_config()
    plan = prepare.plan_from(config)
    secret = b"benchmark-secret-not-for-real-data"
    start = time.perf_counter()
    inputs, _ = prepare.list_inputs(cohort, config)
    listing = time.perf_counter() - start
    rows = build_records.usable_rows(build_records.read_reports(cohort, config), secret, config)
    inputs = [item for item in inputs if item["series_id"] in rows]
    chosen = [inputs[i] for i in np.linspace(0, len(inputs) - 1, min(FLAGS.series, len(inputs))).astype(int)]
    read = resampled = whole = 0.0
    dicom_read, dicom_resampled, dicom_items = 0.0, 0.0, []
    for item in chosen:
        t0 = time.perf_counter()
        scan = canonical.to_canonical(prepare.load_scan(item))
        scan_read = time.perf_counter() - t0
        labels = canonical.to_canonical(canonical.load_nifti(item["mask"], is_label=True))
        t1 = time.perf_counter()
        preprocess.resample(scan, labels, plan)  # to the plan's spacing, cropped around the spine, with the mask
        t2 = time.perf_counter()
        if item["kind"] == "dicom":
            dicom_read += scan_read
            dicom_resampled += t2 - t0
            dicom_items.append(item)
        result = build_records.process_input(item, rows[item["series_id"]], plan, config, secret)
        t3 = time.perf_counter()
        assert result["records"], result["failures"]
        read, resampled, whole = read + t1 - t0, resampled + t2 - t0, whole + t3 - t2
    n = len(chosen)
    print(f"{len(inputs)} inputs listed in {listing:.1f} s (DICOM headers of every file); {n} timed, one core:")
    print(f"  read scan + mask to the canonical frame                     {n / read:6.1f} series/s")
    print(f"  read scan + mask and resample both to the plan's spacing    {n / resampled:6.1f} series/s")
    print(f"  process_input (read, check, preprocess, encode four regions) {n / whole:6.1f} series/s")
    dcm2niix = shutil.which("dcm2niix", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                               os.environ.get("PATH", "")]))
    if dicom_items and dcm2niix:
        peer = _dcm2niix_seconds(dcm2niix, dicom_items)
        m = len(dicom_items)
        print(f"  the same {m} DICOM series: dcm2niix conversion {m / peer:6.1f} series/s; spinejax reading to the "
              f"canonical frame {m / dicom_read:6.1f} series/s ({peer / dicom_read:.2f}x dcm2niix's speed); reading "
              f"scan and mask and resampling both {m / dicom_resampled:6.1f} series/s ({peer / dicom_resampled:.2f}x)")
    if FLAGS.records:
        index = pd.read_csv(Path(FLAGS.records) / "index.csv")
        whole = index[(index["region"] == "whole") & (index["split"] == "train")]
        shards = sorted(str(Path(FLAGS.records) / s) for s in whole["shard"].unique())
        source = grain.sources.ArrayRecordDataSource(shards)
        order = np.random.default_rng(0).permutation(len(source))
        start = time.perf_counter()
        for i in order:
            fields = records.decode(source[int(i)])
        seconds = time.perf_counter() - start
        print(f"  reader: {len(source) / seconds:.0f} records/s (whole-spine train records, random order, decoded "
              f"to dense float16, {fields['volume'].nbytes / 1e3:.0f} kB of volume each)")


def _dcm2niix_seconds(dcm2niix: str, items: list[dict]) -> float:
    """Seconds dcm2niix takes to convert each series (its files linked into a folder of their own)."""
    seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for n, item in enumerate(items):
            folder, out = Path(tmp) / f"in{n}", Path(tmp) / f"out{n}"
            folder.mkdir()
            out.mkdir()
            for k, path in enumerate(item["files"]):
                (folder / f"{k:05d}.dcm").symlink_to(Path(path).resolve())
            start = time.perf_counter()
            subprocess.run([dcm2niix, "-z", "n", "-b", "n", "-f", "series", "-o", str(out), str(folder)],
                           check=True, capture_output=True)
            seconds += time.perf_counter() - start
    return seconds


def define_flags() -> None:
    """Command-line flags, defined only when this module is the program (so others can import it)."""
    flags.DEFINE_string("input", None, "Cohort folder.")
    flags.DEFINE_string("records", None, "A records folder to measure the reader on (optional).")
    flags.DEFINE_integer("series", 60, "How many series to time.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
