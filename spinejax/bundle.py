"""The model bundle: a trained model and everything needed to predict with it on another machine.

    BUNDLE/
      bundle.json   format version; the model and loss config and the age head; the region and its grid; the
                    preprocessing plan (values and hash) and the records settings that read a scan; the mask
                    label convention; the bias correction (method, coefficients, who it was fitted on); the
                    interval calibration (split-conformal quantiles and who they were fitted on); the training
                    cohort's summary; the checkpoint step; library versions
      params.npz    parameters and batch-norm statistics: one float32 array per leaf, named by its path
      SHA256SUMS    the sha256 of each file above (`sha256sum -c` format)

No pickle: params.npz holds numeric arrays only and is read with allow_pickle=False; bundle.json is JSON.
A bundle is refused when a checksum fails, a file is missing, or its format version is not this one's. No
path, id or secret goes in: the summary holds counts, ages, keyed site codes and the eligibility rule.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
from pathlib import Path

import jax
import ml_collections
import numpy as np

from spinejax import losses, models
from spinejax.errors import InputError

FORMAT_VERSION = 1
FILES = ("bundle.json", "params.npz")
LIBRARIES = ("jax", "jaxlib", "flax", "numpy", "pydicom", "nibabel")
INTERVAL_LEVELS = (0.8, 0.9, 0.95)
LABEL_CONVENTION = "TotalSpineSeg (data_prep/cohort/spine_labels.py)"
_NONE = {"method": "none", "slope": 1.0, "intercept": 0.0}


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A loaded, checked bundle: its facts (bundle.json) and the flax variables."""

    facts: dict
    variables: dict  # {'params': ..., 'batch_stats': ...} of numpy float32 arrays

    @property
    def model_config(self) -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(self.facts["model"])

    @property
    def head(self) -> losses.AgeHead:
        head = self.facts["head"]
        return losses.AgeHead(**{**head, "bin_centers_years": tuple(head["bin_centers_years"])})

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(self.facts["grid"])

    def model(self) -> models.AgeCNN:
        return models.build(self.model_config, self.head.outputs)


def conformal_quantile(residuals: np.ndarray, level: float) -> float:
    """Split-conformal half-width (years) for coverage `level` from calibration residuals |age - prediction|
    [n]: the ceil((n + 1) * level)-th smallest, so a new exchangeable case is covered with probability at
    least `level` (Vovk et al.; Lei et al. 2018). Infinite when n is too small for the level."""
    residuals = np.sort(np.abs(np.asarray(residuals, float)))
    rank = int(np.ceil((len(residuals) + 1) * level))
    return float(residuals[rank - 1]) if rank <= len(residuals) else float("inf")


def flatten(variables: dict) -> dict[str, np.ndarray]:
    """{'params/Conv_0/kernel': array, ...}: every leaf of a flax variable tree by its path."""
    leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf, np.float32) for path, leaf in leaves}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write(folder: Path, facts: dict, variables: dict) -> None:
    """bundle.json, params.npz and SHA256SUMS into `folder` (which exists and is empty)."""
    folder = Path(folder)
    facts = {"format_version": FORMAT_VERSION, "label_convention": LABEL_CONVENTION,
             "libraries": {n: importlib.metadata.version(n) for n in LIBRARIES}, **facts}
    (folder / "bundle.json").write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    np.savez(folder / "params.npz", **flatten(variables))
    (folder / "SHA256SUMS").write_text("".join(f"{_sha256(folder / n)}  {n}\n" for n in FILES))


def load(folder) -> Bundle:
    """The bundle in `folder`, checked (module docstring). Raises InputError saying what is wrong."""
    folder = Path(folder)
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        raise InputError(f"{folder}: not a spinejax model bundle (no SHA256SUMS; make one with spinejax.export)")
    listed = {}
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        listed[name.strip()] = digest.strip()
    for name in FILES:
        if name not in listed or not (folder / name).is_file():
            raise InputError(f"{folder}: the bundle lacks {name}")
        if _sha256(folder / name) != listed[name]:
            raise InputError(f"{folder}/{name} fails its checksum: the bundle was changed or damaged; export it again")
    facts = json.loads((folder / "bundle.json").read_text())
    if facts.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{folder}: bundle format {facts.get('format_version')!r}; this spinejax reads "
                         f"{FORMAT_VERSION}: export it again with this version")
    with np.load(folder / "params.npz", allow_pickle=False) as arrays:
        stored = {k: arrays[k] for k in arrays.files}
    bundle = Bundle(facts, {})
    model = bundle.model()
    template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, *bundle.grid, 1), np.float32),
                                                 train=False))
    expected = flatten(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template))
    if set(expected) != set(stored) or any(stored[k].shape != v.shape for k, v in expected.items()):
        raise InputError(f"{folder}/params.npz does not fit the bundle's model (the config and the parameters "
                         "disagree)")
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    names = ["/".join(str(getattr(k, "key", k)) for k in path) for path, _ in leaves]
    variables = jax.tree_util.tree_unflatten(treedef, [stored[n] for n in names])
    return Bundle(facts, variables)


def export(workdir, out, checkpoint: str = "best") -> dict:
    """Writes the bundle of `workdir`'s `checkpoint` into `out` (data_prep.output_folder: whole, never over the
    user's files); returns bundle.json's facts. Needs spinejax.evaluate's predictions of that checkpoint on the
    run's records (the validation split calibrates the intervals) and, when analysis.report ran on them, takes
    its bias correction."""
    from data_prep import output_folder  # the one writer of output folders, shared with data_prep's stages
    from spinejax import workdir as workdir_format

    workdir = Path(workdir)
    config, run, head = workdir_format.load_run(workdir)
    state, _, step, _ = workdir_format.restore(workdir, checkpoint)
    predictions = workdir / "predictions"
    metrics = predictions / "metrics.json"
    if not metrics.is_file() or json.loads(metrics.read_text())["checkpoint_step"] != step:
        raise InputError(f"{predictions}: no evaluation of checkpoint step {step}; run spinejax.evaluate "
                         f"--workdir={workdir} first (its validation predictions calibrate the intervals)")
    validation = _read_predictions(predictions / "validation.csv")
    correction = _bias_correction(workdir, step)
    calibrated = _apply_correction(correction, validation["predicted_age"].to_numpy())
    residuals = np.abs(validation["age"].to_numpy(float) - calibrated)
    manifest = json.loads((Path(config.data.records_dir) / "manifest.json").read_text())
    train_rows = _read_predictions(predictions / "train.csv")
    facts = {
        "checkpoint_step": int(step), "region": run["region"], "grid": list(run["grid"]), "head": run["head"],
        "model": config.model.to_dict(), "loss": config.loss.to_dict(), "batch_size": int(config.batch_size),
        "preprocessing": {"plan": manifest["plan"], "plan_hash": manifest["plan_hash"],
                          "max_oblique_deg": float(manifest["config"]["max_oblique_deg"]),
                          "data_fingerprint": manifest["data_fingerprint"]},
        "bias_correction": correction,
        "interval": {"method": "split-conformal on |age - corrected predicted age|",
                     "fitted_on": f"validation records of the run (n={len(residuals)}, eligible and not)",
                     "half_width_years": {str(level): conformal_quantile(residuals, level)
                                          for level in INTERVAL_LEVELS}},
        "training_cohort": {
            "train_records": int(run["train_records"]), "validation_records": int(run["validation_records"]),
            "age_years": {"min": float(train_rows["age"].min()), "max": float(train_rows["age"].max()),
                          "mean": float(train_rows["age"].mean())},
            "sites": sorted(map(str, train_rows["site"].dropna().unique())),
            "eligible_only": bool(config.data.eligible_only),
            "eligibility": "normal spines by Canberra distance, UMAP and HDBSCAN (data_prep.eligibility)"
                           if config.data.eligible_only else "every record"},
    }
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    with output_folder.OutputFolder(Path(out), "bundle") as folder:
        folder.start({"workdir_step": int(step), "time": _now()})
        write(folder.partial, facts, jax.tree.map(np.asarray, variables))
        folder.commit()
    return facts


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _read_predictions(path: Path):
    import pandas as pd

    return pd.read_csv(path, dtype={"series_key": str, "subject_key": str, "site": str}, keep_default_na=False,
                       na_values=[""])


def _bias_correction(workdir: Path, step: int) -> dict:
    """analysis.report's correction of this checkpoint's predictions, or none (and why)."""
    path = workdir / "analysis" / "bias_correction.json"
    sag = workdir / "analysis" / "sag.csv"
    if not path.is_file() or not sag.is_file():
        return {**_NONE, "reason": "analysis.report was not run on this workdir"}
    steps_seen = set(_read_predictions(sag)["checkpoint_step"].astype(int))
    if steps_seen != {int(step)}:
        return {**_NONE, "reason": "analysis.report ran on another checkpoint's predictions"}
    correction = json.loads(path.read_text())
    if correction["method"] == "residual":  # needs each person's age: not applicable to a new scan
        return {**_NONE, "reason": "the run's correction ('residual') needs the chronological age"}
    return correction


def _apply_correction(correction: dict, predicted: np.ndarray) -> np.ndarray:
    """Corrected predicted age (years) [n] from raw [n] (analysis.bias_correction; 'linear' or 'none' need no
    chronological age)."""
    from analysis import bias_correction

    predicted = np.asarray(predicted, float)
    return bias_correction.corrected_age(correction, np.full_like(predicted, np.nan), predicted)


def corrected_age(bundle: Bundle, predicted: np.ndarray) -> np.ndarray:
    """The bundle's bias correction of raw predicted ages (years) [n] -> [n]; needs no chronological age."""
    return _apply_correction(bundle.facts["bias_correction"], predicted)
