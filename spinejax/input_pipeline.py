"""Training and evaluation input over the ArrayRecord shards, with grain.

RECORDS_DIR (written by data_prep.build_records) holds `<region>/<split>-NNNNN-of-MMMMM.array_record`,
`index.csv` (series_key, subject_key, split, region, age, sex, site, shard, position) and
`manifest.json` (plan_hash, grid shapes). A `Selection` is the rows of index.csv one run uses, optionally
limited to eligible subjects (data_prep.eligibility's eligibility.csv) and to a nested fraction of
subjects (the data-size ablation: the 10% subjects lie inside the 25% ones, whatever the fraction).

Train input (grain's dataset API): each process reads its own contiguous part of the records, shuffled
afresh each epoch from the seed, augmented, in batches of global_batch / process_count. Batch k is a
function of the records, the seed and k alone (the augmentation's random draws are keyed by the batch's
position), so threads and worker processes change the speed, never the batches (on the same numpy build and CPU: its
float32 log, sin and cos may differ in the last bit between SIMD paths). Its iterator state is saved in the
checkpoint, so a resumed run sees exactly the data the straight run would have. Evaluation input: every
record of the split exactly once, padded to whole global batches with zero-weight examples, each process
reading its slice of every batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from pathlib import Path

import grain
import numpy as np
import pandas as pd

from spinejax import augment, records


@dataclasses.dataclass(frozen=True)
class Selection:
    """Records one run reads. `rows`: index.csv rows in a fixed order, with `source_index` (position in the
    concatenation of `paths`); `grid`: [slices, rows, cols] of the region; `plan_hash`: of the records."""

    records_dir: Path
    region: str
    split: str
    paths: tuple[str, ...]
    rows: pd.DataFrame
    grid: tuple[int, int, int]
    plan_hash: str


def read_manifest(records_dir: Path) -> dict:
    path = Path(records_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest; build the records with data_prep.build_records first")
    return json.loads(path.read_text())


def nested_subset(subject_keys: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask keeping ceil(fraction * subjects) subjects, chosen by a seeded hash rank.

    The rank of a subject does not depend on the fraction, so smaller fractions are subsets of larger ones.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"data fraction {fraction} must be in (0, 1]")
    subjects = sorted(set(subject_keys))
    rank = sorted(subjects, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    keep = set(rank[: math.ceil(fraction * len(subjects))])
    return subject_keys.isin(keep).to_numpy()


def select(records_dir, region: str, split: str, *, plan_hash: str = "", eligibility_csv: str = "",
           eligible_only: bool = False, fraction: float = 1.0, subset_seed: int = 0) -> Selection:
    """The records of `region` and `split`, restricted as asked.

    plan_hash: the plan the caller expects ('' accepts the manifest's); a mismatch is an error.
    eligibility_csv: data_prep.eligibility's output; with eligible_only, only its eligible series stay.
    """
    records_dir = Path(records_dir)
    manifest = read_manifest(records_dir)
    if plan_hash and manifest["plan_hash"] != plan_hash:
        raise ValueError(f"{records_dir}/manifest.json: records made with plan {manifest['plan_hash']}, this run "
                         f"expects {plan_hash}; rebuild the records or train a new model")
    grids = dict((name, tuple(shape)) for name, shape in manifest["plan"]["grids"])
    if region not in grids:
        raise ValueError(f"{records_dir}: no region {region!r} (has {sorted(grids)})")
    index = pd.read_csv(records_dir / "index.csv", dtype={"series_key": str, "subject_key": str, "sex": str},
                        keep_default_na=False)
    paths = tuple(sorted(str(p) for p in (records_dir / region).glob(f"{split}-*.array_record")))
    rows = index[(index.region == region) & (index.split == split)].copy()
    if not paths or rows.empty:
        raise ValueError(f"{records_dir}: no {split} records of region {region}")
    sizes = {Path(p).relative_to(records_dir).as_posix(): len(grain.sources.ArrayRecordDataSource([p]))
             for p in paths}
    counted = rows.groupby("shard").size().to_dict()
    if counted != sizes:
        raise ValueError(f"{records_dir}/index.csv does not match the {region}/{split} shards "
                         f"(index {counted}, files {sizes}); rebuild the records")
    offsets = dict(zip(sizes, np.cumsum([0] + list(sizes.values()))[:-1]))
    rows["source_index"] = [int(offsets[s] + p) for s, p in zip(rows["shard"], rows["position"])]
    removed_by = []  # which filter emptied the selection, for the message
    if eligibility_csv:
        _same_secret(manifest, Path(eligibility_csv).parent / "summary.json", records_dir)
        rows = _with_eligibility(rows, Path(eligibility_csv))
        if eligible_only:
            before = len(rows)
            rows = rows[rows["eligible"]]
            removed_by.append(f"eligibility ({eligibility_csv}: {len(rows)} of {before} eligible; "
                              "--config.data.eligible_only=False trains on everyone)")
    if fraction < 1:
        before = len(rows)
        rows = rows[nested_subset(rows["subject_key"], fraction, subset_seed)]
        removed_by.append(f"the data fraction {fraction:g} ({len(rows)} of {before})")
    if rows.empty:
        raise ValueError(f"{records_dir}: no {split} records of region {region} are left after "
                         f"{' and '.join(removed_by) or 'selection'}")
    rows = rows.sort_values("source_index").reset_index(drop=True)
    return Selection(records_dir, region, split, paths, rows, grids[region], manifest["plan_hash"])


def _same_secret(manifest: dict, summary_path: Path, records_dir: Path) -> None:
    """Refuses records and an eligibility table keyed under two secrets: their keys would never match."""
    if not summary_path.is_file():
        return
    theirs = json.loads(summary_path.read_text()).get("secret_fingerprint")
    ours = manifest.get("secret_fingerprint")
    if theirs and ours and theirs != ours:
        raise ValueError(f"{records_dir} and {summary_path.parent} were keyed with different secrets (fingerprints "
                         f"{ours} and {theirs}); rebuild one of them with the other's --secret_file")


def _with_eligibility(rows: pd.DataFrame, path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no eligibility table; run data_prep.eligibility or set "
                                "config.data.eligibility_csv=''")
    table = pd.read_csv(path, dtype={"series_key": str}, keep_default_na=False)
    eligible = dict(zip(table["series_key"], table["eligible"].astype(str) == "True"))
    unknown = sorted(set(rows["series_key"]) - set(eligible))
    if unknown:
        raise ValueError(f"{path}: {len(unknown)} series of the records are not in the eligibility table "
                         f"(first: {unknown[0]}); was it made from the same cohort and secret?")
    rows["eligible"] = rows["series_key"].map(eligible)
    return rows


class RecordSource:
    """grain random-access source over the selected records: element i -> (i, record bytes).

    Index -1 in `source_indices` is padding and yields (i, b''), which decodes to a zero-weight example.
    """

    def __init__(self, paths, source_indices):
        self._paths = tuple(paths)
        self._indices = np.asarray(source_indices, np.int64)
        self._source = grain.sources.ArrayRecordDataSource(list(self._paths))

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i):
        return int(i), self._record(i)

    def _record(self, i: int) -> bytes:
        """The bytes of element i's record; b'' for padding."""
        j = int(self._indices[i])
        return b"" if j < 0 else self._source[j]

    def __repr__(self) -> str:  # grain logs the source; keep it short
        return f"RecordSource({len(self._paths)} files, {len(self)} records)"


class ShuffledEpochs(RecordSource):
    """Endless grain source over rows [start, start + count) of the selection, shuffled afresh each epoch: element k
    is row start + p_e[k mod count], where p_e is epoch e = k // count's permutation, drawn from (seed, e); yields
    (row, record bytes).

    One lookup an element: grain's slice, seed, shuffle and repeat took four dataset layers and an index_shuffle
    call, 8% of the input's Python time with no worker processes."""

    def __init__(self, paths, source_indices, start: int, count: int, seed: int):
        super().__init__(paths, source_indices)
        if count < 1:
            raise ValueError(f"no records to shuffle (rows {start} to {start + count})")
        self._start, self._count, self._seed = int(start), int(count), int(seed)
        # The last two epochs' (epoch, permutation), newest first, replaced as one tuple: the reader threads may
        # straddle an epoch's end, and each reads the tuple once.
        self._epochs: tuple = ()

    def __len__(self) -> int:
        return sys.maxsize

    def __getitem__(self, k):
        epoch, position = divmod(int(k), self._count)
        cache = self._epochs
        permutation = next((p for e, p in cache if e == epoch), None)
        if permutation is None:
            permutation = np.random.default_rng([self._seed, epoch]).permutation(self._count)
            self._epochs = ((epoch, permutation), *cache[:1])
        row = self._start + int(permutation[position])
        return row, self._record(row)

    def __repr__(self) -> str:
        return f"ShuffledEpochs({len(self._paths)} files, rows {self._start} to {self._start + self._count})"


class Decode(grain.transforms.Map):
    """(i, bytes) -> volume [slices, rows, cols] float16 (as stored; the model casts it on the device), mask
    uint8, age, weight 1 (0 for padding), index."""

    def __init__(self, plan_hash: str, grid):
        self.plan_hash, self.grid = plan_hash, tuple(grid)

    def map(self, element):
        i, blob = element
        if not blob:
            return {"volume": np.zeros(self.grid, np.float16), "mask": np.zeros(self.grid, np.uint8),
                    "age": np.float32(0), "weight": np.float32(0), "index": np.int32(-1)}
        record = records.decode(blob, expected_plan_hash=self.plan_hash)
        if tuple(record["volume"].shape) != self.grid:
            raise ValueError(f"record {record['series_key']}: shape {record['volume'].shape}, plan says {self.grid}")
        return {"volume": record["volume"], "mask": record["mask"],
                "age": np.float32(record["age"]), "weight": np.float32(1), "index": np.int32(i)}


class DecodeMasked(Decode):
    """(i, bytes) -> the in-mask values (float16 [n]) and the mask (bool [slices, rows, cols]) for AugmentBatch,
    which makes the dense volumes: no dense float volume is made twice per training sample."""

    def map(self, element):
        i, blob = element
        if not blob:
            return {"values": np.zeros(0, np.float16), "inside": np.zeros(self.grid, bool), "age": np.float32(0),
                    "weight": np.float32(0), "index": np.int32(-1)}
        record = records.decode_masked(blob, expected_plan_hash=self.plan_hash)
        if tuple(record["mask"].shape) != self.grid:
            raise ValueError(f"record {record['series_key']}: shape {record['mask'].shape}, plan says {self.grid}")
        return {"values": record["volume_inside"], "inside": record["mask"], "age": np.float32(record["age"]),
                "weight": np.float32(1), "index": np.int32(i)}


class AugmentBatch(grain.transforms.RandomMap):
    """A batch (tuple) of DecodeMasked's elements -> one batch: volume [batch, slices, rows, cols, 1] float16,
    augmented (spinejax.augment.augment_batch, one array for the batch), age, weight [batch]
    float32, index [batch] int32."""

    def __init__(self, config):
        self.config = config

    def random_map(self, elements, rng: np.random.Generator):
        volume = augment.augment_batch([e["values"] for e in elements], [e["inside"] for e in elements], rng,
                                       self.config)
        return {"volume": volume[..., None], **{key: np.stack([e[key] for e in elements])
                                                for key in ("age", "weight", "index")}}


class ToModelInput(grain.transforms.Map):
    """Adds the channel axis the model expects ([slices, rows, cols, 1]) and keeps what the step reads."""

    def map(self, element):
        return {"volume": element["volume"][..., None], "age": element["age"], "weight": element["weight"],
                "index": element["index"]}


def read_options(batch: int) -> grain.ReadOptions:
    """Two reader threads, a few batches ahead. grain's default (16 threads, 500 records ahead) checks all 500
    pending reads for every record it hands out: with the 1-ms records here that bookkeeping was a quarter of the
    pipeline's time (355 against 457 samples/s with no worker processes, the default run's records)."""
    return grain.ReadOptions(num_threads=2, prefetch_buffer_size=max(32, 2 * batch))


# What a saved input iterator state means: 4 is spinejax's own epoch permutations (ShuffledEpochs) and the bias
# field multiplied as one dense field; 3 shuffled with grain's index_shuffle and multiplied the field's two factors
# in turn (other float rounding), both drawing augmentation per batch; 2 drew it per record; 1 was grain's
# DataLoader. A checkpoint of another version cannot be restored into this iterator (it would see other batches
# than the straight run; train.py refuses to resume it).
INPUT_VERSION = 4


def train_dataset(selection: Selection, *, local_batch: int, seed: int, augment_config, shard_index: int = 0,
                  shard_count: int = 1) -> grain.MapDataset:
    """Endless shuffled, augmented batches of part `shard_index` of `shard_count` of `selection` (equal
    contiguous parts; the remainder is left out, as grain's ShardByJaxProcess does), a grain MapDataset whose
    element k is batch k: dicts of numpy arrays, volume [local_batch, slices, rows, cols, 1] float16, age,
    weight [local_batch] float32, index int32 (the selection row)."""
    part = len(selection.rows) // shard_count
    # grain keys random draws by position within this part: each part needs its own seed, or every process would
    # flip, shift and add the same noise at the same step. Part 0 keeps `seed` (one process: unchanged).
    part_seed = seed if shard_index == 0 else int(np.random.SeedSequence([seed, shard_index]).generate_state(1)[0])
    records_ds = grain.MapDataset.source(ShuffledEpochs(selection.paths, selection.rows["source_index"],
                                                        shard_index * part, part, part_seed))
    if augment_config.enabled:  # augmented a batch at a time, the draws keyed by the batch's position
        return records_ds.map(DecodeMasked(selection.plan_hash, selection.grid)).batch(
            local_batch, drop_remainder=True, batch_fn=tuple).random_map(AugmentBatch(augment_config), seed=part_seed)
    records_ds = records_ds.map(Decode(selection.plan_hash, selection.grid))
    return records_ds.map(ToModelInput()).batch(local_batch, drop_remainder=True)


def train_loader(selection: Selection, *, local_batch: int, seed: int, augment_config, worker_count: int,
                 worker_buffer_size: int) -> grain.IterDataset:
    """This process's `train_dataset` as an iterable: batches made two ahead in threads, or in `worker_count`
    worker processes (each holding `worker_buffer_size` batches) taking batches in turn, so the order and
    content do not depend on the count. Its iterators have get_state/set_state (checkpointing.py).

    grain's dataset API rather than its DataLoader: with no worker processes the DataLoader's per-record
    machinery cost as much as decoding and augmenting (497-528 against 807-838 samples/s, CPU preset)."""
    import jax  # the process's place among the training processes; here, so selecting records needs no jax

    batches = train_dataset(selection, local_batch=local_batch, seed=seed, augment_config=augment_config,
                            shard_index=jax.process_index(), shard_count=jax.process_count())
    iterable = batches.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2))
    if worker_count > 0:
        iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count,
                                                                     per_worker_buffer_size=worker_buffer_size))
    return iterable


def eval_layout(count: int, global_batch: int, process_count: int, process_index: int) -> np.ndarray:
    """Which selection rows this process reads, in order: -1 marks padding.

    The `count` rows are padded to whole global batches; global batch b is rows [b*G, (b+1)*G), and process p
    reads its contiguous slice [p*L, (p+1)*L) of it (L = G / process_count), the slice of the global array its
    devices hold. Returns [batches * L] int64.
    """
    batches = max(1, math.ceil(count / global_batch))
    padded = np.full(batches * global_batch, -1, np.int64)
    padded[:count] = np.arange(count)
    local = global_batch // process_count
    return padded.reshape(batches, process_count, local)[:, process_index].reshape(-1)


def eval_loader(selection: Selection, *, global_batch: int, process_count: int, process_index: int,
                worker_count: int) -> grain.DataLoader:
    """One pass over every record of `selection` (plus zero-weight padding), in this process's slices;
    batches as train_loader's, with `index` the selection row (-1 for padding)."""
    rows = eval_layout(len(selection.rows), global_batch, process_count, process_index)
    source_indices = np.where(rows >= 0, selection.rows["source_index"].to_numpy()[np.maximum(rows, 0)], -1)
    source = _EvalSource(selection.paths, source_indices, rows)
    operations = [Decode(selection.plan_hash, selection.grid), ToModelInput(),
                  grain.transforms.Batch(global_batch // process_count, drop_remainder=True)]
    sampler = grain.samplers.IndexSampler(len(source), shuffle=False, num_epochs=1)
    return grain.DataLoader(data_source=source, sampler=sampler, operations=operations, worker_count=worker_count,
                            read_options=read_options(global_batch // process_count))


class _EvalSource(RecordSource):
    """RecordSource whose element index is the selection row, so predictions map back to index rows."""

    def __init__(self, paths, source_indices, selection_rows):
        super().__init__(paths, source_indices)
        self._rows = np.asarray(selection_rows, np.int64)

    def __getitem__(self, i):
        return int(self._rows[i]), self._record(i)
