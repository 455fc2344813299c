"""Times build_records' stages on a cohort, and how fast a reader gets records back from the shards.

    python -m data_prep.records_benchmark --input=COHORT_DIR [--records=RECORDS_DIR] [--series=60]

Prints series per second (one core) for reading (DICOM or NIfTI to the canonical frame, with the mask),
preprocessing (four region crops) and encoding + writing, and records per second for random-access
reads through grain's ArrayRecordDataSource with decoding (from RECORDS_DIR, e.g. the default run's).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import grain
import numpy as np
import pandas as pd
from absl import app, flags
from array_record.python.array_record_module import ArrayRecordWriter

from configs import records as records_config
from data_prep import build_records, canonical, preprocess
from spinejax import records

FLAGS = flags.FLAGS


def _read(item: dict, cohort: Path) -> tuple[canonical.Volume, canonical.Volume]:
    scan = build_records.load_scan(item)
    labels = canonical.load_nifti(cohort / "masks" / f"{item['series_id']}.nii.gz", is_label=True)
    return canonical.to_canonical(scan), canonical.to_canonical(labels)


def main(argv: list[str]) -> None:
    del argv
    cohort = Path(FLAGS.input)
    config = records_config.get_config()
    plan = build_records.plan_from(config)
    start = time.perf_counter()
    inputs, _ = build_records.list_inputs(cohort)
    listing = time.perf_counter() - start
    chosen = [inputs[i] for i in np.linspace(0, len(inputs) - 1, min(FLAGS.series, len(inputs))).astype(int)]
    read = prep = write = 0.0
    out = Path(tempfile.mkdtemp()) / "bench.array_record"
    writer = ArrayRecordWriter(str(out), "group_size:1")
    for item in chosen:
        t0 = time.perf_counter()
        scan, labels = _read(item, cohort)
        t1 = time.perf_counter()
        resampled = preprocess.resample(scan, labels, plan)
        crops = [preprocess.cut_region(*resampled, plan, r) for r in config.regions]
        t2 = time.perf_counter()
        for region, arrays in zip(config.regions, crops):
            writer.write(records.encode({**arrays, "schema_version": records.SCHEMA_VERSION,
                                         "plan_hash": plan.fingerprint(), "subject_key": "s", "series_key": "k",
                                         "split": "train", "region": region, "age": 50.0, "sex": "F",
                                         "site": "x"}))
        t3 = time.perf_counter()
        read, prep, write = read + t1 - t0, prep + t2 - t1, write + t3 - t2
    writer.close()
    n = len(chosen)
    print(f"{len(inputs)} inputs listed in {listing:.1f} s (DICOM headers of every file); {n} timed, one core:")
    print(f"  read scan + mask to the canonical frame  {n / read:6.1f} series/s")
    print(f"  preprocess four regions                  {n / prep:6.1f} series/s")
    print(f"  encode + write four records              {n / write:6.1f} series/s")
    print(f"  all three                                {n / (read + prep + write):6.1f} series/s")
    if FLAGS.records:
        index = pd.read_csv(Path(FLAGS.records) / "index.csv")
        whole = index[(index["region"] == "whole") & (index["split"] == "train")]
        shards = sorted(str(Path(FLAGS.records) / s) for s in whole["shard"].unique())
        source = grain.sources.ArrayRecordDataSource(shards)
        order = np.random.default_rng(0).permutation(len(source))
        start = time.perf_counter()
        for i in order:
            fields = records.decode(source[int(i)])
            fields["volume"].astype(np.float32)
        seconds = time.perf_counter() - start
        print(f"  reader: {len(source) / seconds:.0f} records/s (whole-spine train records, random order, decoded "
              f"to float32, {fields['volume'].nbytes / 1e3:.0f} kB each as float16)")


def define_flags() -> None:
    """Command-line flags, defined only when this module is the program (so others can import it)."""
    flags.DEFINE_string("input", None, "Cohort folder.")
    flags.DEFINE_string("records", None, "A records folder to measure the reader on (optional).")
    flags.DEFINE_integer("series", 60, "How many series to time.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
