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
import datetime
import hashlib
import importlib.metadata
import json
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pandas as pd

from spinejax import (
    bias_correction,
    losses,
    models,
    output_folder,  # the one writer of output folders, shared with data_prep's stages
)
from spinejax.errors import InputError
from spinejax.scans import preprocess

FORMAT_VERSION = 1
FILES = ("bundle.json", "params.npz")
LIBRARIES = ("jax", "jaxlib", "flax", "numpy", "pydicom", "nibabel")
INTERVAL_LEVELS = (0.8, 0.9, 0.95)
LABEL_CONVENTION = "TotalSpineSeg (spinejax/scans/spine_labels.py)"
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


REQUIRED = {"checkpoint_step": int, "region": str, "grid": list, "head": dict, "model": dict, "batch_size": int,
            "preprocessing": dict, "bias_correction": dict, "interval": dict, "training_cohort": dict}


def _check_facts(folder: Path, facts: dict) -> None:
    """bundle.json holds what a prediction needs, and its plan is the one its hash names (InputError)."""
    wrong = [k for k, kind in REQUIRED.items() if not isinstance(facts.get(k), kind)]
    if wrong:
        raise InputError(f"{folder}/bundle.json lacks or mistypes {', '.join(wrong)}: export the bundle again")
    try:
        plan = plan_of(facts)
        consistent = plan.fingerprint() == facts["preprocessing"]["plan_hash"] and \
            list(plan.grid(facts["region"])) == facts["grid"]
    except (KeyError, TypeError, ValueError):
        consistent = False
    if not consistent:
        raise InputError(f"{folder}/bundle.json: its preprocessing plan, plan hash and grid disagree: export the "
                         "bundle again")


def plan_of(facts: dict) -> preprocess.Plan:
    """The bundle's preprocessing plan."""
    return preprocess.Plan.from_json(facts["preprocessing"]["plan"])


def _leaf_names(tree) -> list[str]:
    """'params/Conv_0/kernel', ...: each leaf of a flax variable tree by its path, in tree order."""
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    return ["/".join(str(getattr(k, "key", k)) for k in path) for path in paths]


def flatten(variables: dict) -> dict[str, np.ndarray]:
    """{'params/Conv_0/kernel': array, ...}: every leaf of a flax variable tree by its path, as float32."""
    return dict(zip(_leaf_names(variables), (np.asarray(leaf, np.float32) for leaf in jax.tree.leaves(variables))))


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
    (folder / "bundle.json").write_text(json.dumps(facts, indent=1, sort_keys=True, allow_nan=False,
                                                   default=int) + "\n")
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
    extra = sorted(p.name for p in folder.iterdir() if p.name not in (*FILES, "SHA256SUMS", ".spinejax-output.json"))
    if extra:
        raise InputError(f"{folder}: files that are not part of a bundle ({', '.join(extra[:3])}): export it again")
    for name in FILES:
        if name not in listed or not (folder / name).is_file():
            raise InputError(f"{folder}: the bundle lacks {name}")
        if _sha256(folder / name) != listed[name]:
            raise InputError(f"{folder}/{name} fails its checksum: the bundle was changed or damaged; export it again")
    try:
        facts = json.loads((folder / "bundle.json").read_text())
    except json.JSONDecodeError:
        raise InputError(f"{folder}/bundle.json is not JSON: export the bundle again") from None
    if facts.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{folder}: bundle format {facts.get('format_version')!r}; this spinejax reads "
                         f"{FORMAT_VERSION}: export it again with this version")
    _check_facts(folder, facts)
    with np.load(folder / "params.npz", allow_pickle=False) as arrays:
        stored = {k: arrays[k] for k in arrays.files}
    bundle = Bundle(facts, {})
    model = bundle.model()
    created = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, *bundle.grid, 1), np.float32),
                                                train=False))
    template = {c: created[c] for c in ("params", "batch_stats")}  # not the 'perturbations' Grad-CAM uses
    names, shapes = _leaf_names(template), [s.shape for s in jax.tree.leaves(template)]
    if set(names) != set(stored) or any(stored[n].shape != s for n, s in zip(names, shapes)):
        raise InputError(f"{folder}/params.npz does not fit the bundle's model (the config and the parameters "
                         "disagree)")
    variables = jax.tree.unflatten(jax.tree.structure(template), [stored[n] for n in names])
    return Bundle(facts, variables)


def export(workdir, out, checkpoint: str = "best") -> dict:
    """Writes the bundle of `workdir`'s `checkpoint` into `out` (spinejax.output_folder: whole, never over the
    user's files); returns bundle.json's facts. Needs spinejax.evaluate's predictions of that checkpoint on the
    run's records (the validation split calibrates the intervals) and, when analysis.report ran on them, takes
    its bias correction. Refused when the records' plan is no longer the one the model was trained on."""
    from spinejax import input_pipeline  # the training side, here only: predict need not load it
    from spinejax import workdir as workdir_format

    workdir = Path(workdir)
    config, run, _ = workdir_format.load_run(workdir)
    records_dir = Path(config.data.records_dir)
    manifest = json.loads((records_dir / "manifest.json").read_text())
    if manifest["plan_hash"] != run["plan_hash"]:
        raise InputError(f"{records_dir} now holds records of plan {manifest['plan_hash']}, the model was trained on "
                         f"plan {run['plan_hash']}: the bundle would preprocess new scans differently")
    predictions = workdir_format.evaluation_folder(workdir, checkpoint, str(records_dir), str(records_dir))
    with output_folder.OutputFolder(Path(out), "bundle") as folder:  # refuses a bad --out before any work
        state, _, step, _ = workdir_format.restore(workdir, checkpoint)
        validation = _evaluated(predictions, "validation", step, workdir, checkpoint)
        correction = _bias_correction(workdir, step)
        residuals = _cross_fitted_residuals(validation, correction)
        train_rows = input_pipeline.select(records_dir, run["region"], "train", plan_hash=run["plan_hash"],
                                           eligibility_csv=config.data.eligibility_csv,
                                           eligible_only=config.data.eligible_only).rows
        widths = {str(level): conformal_quantile(residuals, level) for level in INTERVAL_LEVELS}
        facts = {
            "checkpoint_step": int(step), "region": run["region"], "grid": list(run["grid"]), "head": run["head"],
            "model": config.model.to_dict(), "loss": config.loss.to_dict(), "batch_size": int(config.batch_size),
            "preprocessing": {"plan": manifest["plan"], "plan_hash": manifest["plan_hash"],
                              "max_oblique_deg": float(manifest["config"]["max_oblique_deg"]),
                              "data_fingerprint": manifest["data_fingerprint"]},
            "bias_correction": correction,
            "interval": {"method": "split-conformal on |age - corrected predicted age|, the correction cross-fitted "
                                   "over two halves of the validation subjects",
                         "fitted_on": f"validation records of the run (n={len(residuals)}, eligible and not)",
                         # None: too few validation records to promise that coverage
                         "half_width_years": {k: (v if np.isfinite(v) else None) for k, v in widths.items()}},
            "training_cohort": {
                "train_records": len(train_rows), "validation_records": int(run["validation_records"]),
                "age_years": {"min": float(train_rows["age"].min()), "max": float(train_rows["age"].max()),
                              "mean": float(train_rows["age"].mean())},
                "sites": int(train_rows["site"].nunique()), "sexes": dict(train_rows["sex"].value_counts()),
                "eligible_only": bool(config.data.eligible_only),
                "eligibility": "normal spines by Canberra distance, UMAP and HDBSCAN (data_prep.eligibility)"
                               if config.data.eligible_only else "every record"},
        }
        folder.start({"workdir_step": int(step), "time": _now()})
        write(folder.partial, facts, jax.tree.map(np.asarray, {"params": state.params,
                                                               "batch_stats": state.batch_stats}))
        folder.commit()
    return facts


def _evaluated(folder: Path, split: str, step: int, workdir: Path, checkpoint: str):
    """The evaluation's `split` table of checkpoint `step`; InputError when missing or of another step."""
    path = folder / f"{split}.csv"
    table = _read_predictions(path) if path.is_file() else None
    if table is None or set(table["checkpoint_step"].astype(int)) != {int(step)}:
        raise InputError(f"{path}: no {split} predictions of checkpoint step {step}; run spinejax.evaluate "
                         f"--workdir={workdir} --checkpoint={checkpoint} first (they calibrate the intervals)")
    return table


def _cross_fitted_residuals(validation, correction: dict) -> np.ndarray:
    """|age - corrected predicted age| [n] of the validation records, each corrected by a fit on the other half
    of the validation subjects: the correction was fitted on these records, and its own residuals would be too
    small for an honest calibration (a 'none' correction needs no refit)."""
    age, predicted = validation["age"].to_numpy(float), validation["predicted_age"].to_numpy(float)
    if correction["method"] == "none":
        return np.abs(age - predicted)
    half = validation["subject_key"].map(lambda k: int(hashlib.sha256(k.encode()).hexdigest(), 16) % 2).to_numpy()
    fitting = np.ones(len(age), bool)
    if "eligible" in str(correction.get("fit_on", "")):  # as analysis.report fitted it: eligible subjects only
        fitting = validation["eligible"].astype(str).eq("True").to_numpy()
    fitted = np.empty_like(age)
    try:
        for fold in (0, 1):
            use = (half != fold) & fitting
            fit = bias_correction.fit(correction["method"], age[use], predicted[use])
            fitted[half == fold] = _apply_correction(fit, predicted[half == fold])
    except bias_correction.CannotFit:  # too few to halve: in-sample, which the interval's note cannot hide
        return np.abs(age - _apply_correction(correction, predicted))
    return np.abs(age - fitted)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _read_predictions(path: Path) -> pd.DataFrame:
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
    """Corrected predicted age (years) [n] from raw [n] (spinejax.bias_correction; 'linear' or 'none' need no
    chronological age)."""
    predicted = np.asarray(predicted, float)
    return bias_correction.corrected_age(correction, np.full_like(predicted, np.nan), predicted)


def corrected_age(bundle: Bundle, predicted: np.ndarray) -> np.ndarray:
    """The bundle's bias correction of raw predicted ages (years) [n] -> [n]; needs no chronological age."""
    return _apply_correction(bundle.facts["bias_correction"], predicted)
