"""The records stage's engine on Apache Beam: the per-input step and the shard writing as Beam transforms.

    python -m data_prep.build_records --input=COHORT_DIR --out=RECORDS_DIR --engine=beam [-- BEAM_OPTIONS]

data_prep.records.build_records does everything else as it does for its local pool (listing the cohort, the
reports table and its schema, keys and splits, the freshness check, index.csv, failures.csv, the manifest):
only the two heavy steps run on Beam, and they call the same functions (build_records.process_job,
plan_shards, write_shard). So the same inputs give the same bytes under either engine, and any runner.

The pipeline:

    jobs --Create--Reshuffle--> process_job (one cache file per input, content-keyed)
         --ToList (all inputs done)--> plan_shards (metadata only) --Reshuffle--> write_shard (one file each)

Why it is safe to retry: a runner re-runs a failed bundle (Dataflow up to 4 times in batch, Flink and Spark
by their own rules). process_job keeps a cache file that is already there and writes a new one aside and
renames it; write_shard writes a whole shard aside from the cache and renames it. A re-run element therefore
rewrites identical files and never appends; a job that failed outright, run again, redoes only what is
missing. An input that fails (a broken file, a bug) is a failure row, as in the local path, never a failed job.

What the workers need: the cohort folder and RECORDS_DIR's parent under the same paths as the launcher (a
shared POSIX file system: NFS, Filestore, Cloud Storage FUSE), this checkout on their Python path with
requirements.txt installed, and the secret, which never travels in the pipeline's serialized functions:
each worker loads it from --secret_file (a path it can read) or $SPINEJAX_SECRET, and refuses one whose
fingerprint differs from the launcher's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import ml_collections

from data_prep.records import build_records
from spinejax.cohort import pseudonym
from spinejax.errors import DEBUG_ENV, InputError
from spinejax.scans import preprocess


def _import_beam():
    """apache_beam, without the warning about optional GCP client libraries that it logs on import."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        import apache_beam
        import apache_beam.options.pipeline_options  # noqa: F401 - used below
    except ImportError as error:
        raise InputError("--engine=beam needs Apache Beam: pip install .[beam] (requirements.txt pins "
                         "apache-beam)") from error
    finally:
        root.setLevel(level)
    return apache_beam


beam = _import_beam()


def pipeline_options(beam_args: list[str], workers: int) -> beam.options.pipeline_options.PipelineOptions:
    """Beam's PipelineOptions from the command line's arguments after `--`. Without a runner: the DirectRunner
    in multi-processing mode with `workers` processes (0: all cores), not Beam's one-process default."""
    if not any(a.startswith("--default_sdk_harness_log_level") for a in beam_args):
        beam_args = [*beam_args, "--default_sdk_harness_log_level=ERROR"]  # workers log every step
    options = beam.options.pipeline_options.PipelineOptions(beam_args)
    standard = options.view_as(beam.options.pipeline_options.StandardOptions)
    direct = options.view_as(beam.options.pipeline_options.DirectOptions)
    if standard.runner in (None, "DirectRunner"):
        given = " ".join(beam_args)
        standard.runner = "DirectRunner"
        if "direct_running_mode" not in given:
            direct.direct_running_mode = "multi_processing"
        if "direct_num_workers" not in given:
            direct.direct_num_workers = workers or os.cpu_count() or 1
    return options


class ProcessJobs(beam.DoFn):
    """process_job on a Beam worker, which loads the secret itself (it is not in the serialized pipeline)."""

    def __init__(self, plan: preprocess.Plan, config: ml_collections.ConfigDict, partial: str,
                 secret_file: str | None, secret_fingerprint: str):
        super().__init__()
        self.plan, self.config, self.partial = plan, config, partial
        self.secret_file, self.secret_fingerprint = secret_file, secret_fingerprint
        self.secret = None

    def setup(self) -> None:
        secret = pseudonym.load_secret(self.secret_file)
        if pseudonym.secret_fingerprint(secret) != self.secret_fingerprint:
            raise InputError("a Beam worker holds another secret than the launcher (--secret_file or "
                             f"${pseudonym.SECRET_ENV} differ between them): its keys could not be joined")
        self.secret = secret

    def process(self, job: tuple):
        yield build_records.process_job(job, self.plan, self.config, self.partial, self.secret)


class BeamEngine:
    """Runs build_records' per-input step and shard writing as one Beam pipeline (module docstring)."""

    def __init__(self, options: beam.options.pipeline_options.PipelineOptions, secret_file: str | None = None):
        self.options, self.secret_file = options, secret_file

    def run(self, jobs: list[tuple], plan: preprocess.Plan, config: ml_collections.ConfigDict, partial: str,
            secret: bytes, shards_of: Callable[[], tuple]) -> None:
        logging.getLogger("apache_beam").setLevel(logging.ERROR)  # relayed worker logs would flood the console
        process = ProcessJobs(plan, config, partial, self.secret_file, pseudonym.secret_fingerprint(secret))
        try:
            with beam.Pipeline(options=self.options) as pipeline:
                done = (pipeline
                        | "inputs" >> beam.Create(jobs)
                        | "spread inputs" >> beam.Reshuffle()
                        | "process each input" >> beam.ParDo(process))
                _ = (done
                     | "all inputs done" >> beam.combiners.ToList()
                     | "plan the shards" >> beam.FlatMap(lambda _: shards_of()[1].items())
                     | "spread shards" >> beam.Reshuffle()
                     | "write each shard" >> beam.MapTuple(
                         lambda name, entries: build_records.write_shard(partial, name, entries)))
        except Exception as error:  # noqa: BLE001 - the runner wraps whatever a worker raised
            if os.environ.get(DEBUG_ENV):
                raise
            last = str(error).strip().splitlines()[-1][:300] if str(error).strip() else type(error).__name__
            raise InputError(f"the Beam pipeline failed ({last}); the inputs it finished are kept: run the same "
                             f"command again to resume (SPINEJAX_DEBUG=1 shows the runner's error)") from error
