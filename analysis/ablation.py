"""The paper's ablation study at small scale: training-data size, loss and spine region.

    python -m analysis.ablation --run_dir=runs/default [--preset=cpu] [--seeds=0,1,2] [--only=loss_l2,...]

For each setting below and each training seed (config.seed), trains (configs/<file>.py with the preset),
evaluates and analyses a run in RUN_DIR/ablation/<setting>/seed<k>/ on RUN_DIR's records and eligibility,
skipping what is finished and resuming what was cut off (spinejax.main resumes from its checkpoints); a run
trained on records or eligibility that have changed since is trained again (records rebuilt with another plan,
say). The
baseline (L1 loss, whole spine, all training subjects) with seed 0 is RUN_DIR/train, the default run, when
it exists. Then writes RUN_DIR/ablation/:
    ablation.csv, ablation.md   per setting: test MAE (mean over seeds, and their spread), its difference
                                from the baseline with a paired bootstrap 95% CI over test subjects (each
                                series' error averaged over the seeds; settings compared on the same series)
                                and whether that CI excludes 0; R2 and r before correction, the gap-age
                                correlation after it, and the planted lifestyle effects' estimates (SAG years,
                                validation and test subjects pooled) with their q (seed 0)
    mae_vs_data_size.png        test MAE against the number of training records, with the CIs
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import matplotlib
import ml_collections

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from absl import app, flags  # noqa: E402

from analysis import peers  # noqa: E402

# (setting, axis, config file, config argument before the preset)
SETTINGS = (
    ("baseline", "all", "configs/loss_l1.py", ""),
    ("data_size_0.1", "data size", "configs/data_size.py", "0.1"),
    ("data_size_0.25", "data size", "configs/data_size.py", "0.25"),
    ("data_size_0.5", "data size", "configs/data_size.py", "0.5"),
    ("loss_l2", "loss", "configs/loss_l2.py", ""),
    ("loss_huber", "loss", "configs/loss_huber.py", ""),
    ("loss_softbin", "loss", "configs/loss_softbin.py", ""),
    ("region_cervical", "region", "configs/region_cervical.py", ""),
    ("region_thoracic", "region", "configs/region_thoracic.py", ""),
    ("region_lumbar", "region", "configs/region_lumbar.py", ""),
)
def workdir_of(run_dir: Path, setting: str, seed: int = 0) -> Path:
    if setting == "baseline" and seed == 0 and (run_dir / "train" / "summary.json").is_file():
        return run_dir / "train"  # the default run is the baseline: same config, no need to train it twice
    return run_dir / "ablation" / setting / f"seed{seed}"


def stale_reason(workdir: Path, records_dir: str | Path, eligibility_csv: str | Path) -> str | None:
    """Why the run in `workdir` is not a run of `records_dir` and `eligibility_csv` as they are now (it was
    trained from other folders, or they changed since), or None when it is one or holds no run yet."""
    from spinejax import train  # imports jax: only when a setting's run is checked

    if not (workdir / "run.json").is_file() or not (workdir / "config.json").is_file():
        return None
    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    # As spinejax.main keeps them in config.json: absolute, or '' for no eligibility table.
    folders = tuple(os.path.abspath(path) if str(path) else "" for path in (records_dir, eligibility_csv))
    if (config.data.records_dir, config.data.eligibility_csv) != folders:
        return "it was trained from another records or eligibility folder"
    if train.inputs_changed(workdir, config):
        return "its records or eligibility changed since it was trained"
    return None


def run_setting(run_dir: Path, setting: str, config_file: str, argument: str, preset: str, seed: int) -> Path:
    """Trains, evaluates and analyses one setting with one seed (each step skipped when its output is newer)."""
    workdir = workdir_of(run_dir, setting, seed)
    records_dir, eligibility_csv = run_dir / "records", run_dir / "eligibility" / "eligibility.csv"
    reason = stale_reason(workdir, records_dir, eligibility_csv)
    if reason:  # a model of other data: its outputs go (spinejax.main would refuse it) and it trains again
        print(f"[{setting} seed {seed}] {reason}: training it again", flush=True)
        from spinejax import train

        train.clear_run(workdir)
    arg = ",".join(a for a in (argument, preset) if a)
    python = sys.executable
    steps = [
        ([python, "-m", "spinejax.main", f"--config={config_file}" + (f":{arg}" if arg else ""),
          f"--workdir={workdir}", f"--config.data.records_dir={records_dir}",
          f"--config.data.eligibility_csv={eligibility_csv}", f"--config.seed={seed}"],
         workdir / "summary.json", None),
        ([python, "-m", "spinejax.evaluate", f"--workdir={workdir}", "--splits=validation,test"],
         workdir / "predictions" / "metrics.json", workdir / "summary.json"),
        ([python, "-m", "analysis.report", f"--workdir={workdir}", "--pooled",
          f"--ground_truth={run_dir / 'cohort' / 'ground_truth.json'}"],
         workdir / "analysis" / "associations.csv", workdir / "predictions" / "metrics.json"),
    ]
    for command, output, after in steps:
        if output.is_file() and (after is None or output.stat().st_mtime >= after.stat().st_mtime):
            continue
        start = time.perf_counter()
        print(f"[{setting} seed {seed}] {' '.join(command[2:4])} ...", flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL if "main" not in command[2] else None)
        print(f"[{setting} seed {seed}] done in {time.perf_counter() - start:.0f} s", flush=True)
    return workdir


def test_errors(workdir: Path) -> pd.DataFrame:
    """The test split's absolute errors (years, uncorrected) by series: series_key, subject_key, error."""
    table = pd.read_csv(workdir / "predictions" / "test.csv", dtype={"series_key": str, "subject_key": str})
    return table.assign(error=(table["predicted_age"] - table["age"]).abs())[["series_key", "subject_key", "error"]]


def seed_errors(run_dir: Path, setting: str, seeds: list[int]) -> pd.DataFrame:
    """The test series' absolute errors, one column per seed (series every seed predicted)."""
    frames = [test_errors(workdir_of(run_dir, setting, s)).set_index(["series_key", "subject_key"])["error"]
              for s in seeds]
    return pd.concat(frames, axis=1, join="inner", keys=seeds)


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def check_seeds_agree(run_dir: Path, setting: str, seeds: list[int]) -> None:
    """Raises ValueError when a setting's seeds were trained with configurations that differ in more than the
    seed (the default run reused as the baseline's seed 0, say, with another preset or records)."""
    from spinejax.train import ADDED_KEYS  # imports jax: only when a setting is summarised

    configs = {s: {**ADDED_KEYS, **_flat(json.loads((workdir_of(run_dir, setting, s) / "config.json").read_text()))}
               for s in seeds}
    first = seeds[0]
    for seed in seeds[1:]:
        differ = sorted(k for k in configs[first].keys() | configs[seed].keys()
                        if k != "seed" and configs[first].get(k) != configs[seed].get(k))
        if differ:
            raise ValueError(f"{setting}: seeds {first} and {seed} were trained with different settings "
                             f"({', '.join(differ[:5])}): retrain one (its workdir: "
                             f"{workdir_of(run_dir, setting, seed)})")


def summarise(run_dir: Path, setting: str, axis: str, seeds: list[int] = (0,), n_boot: int = 2000) -> dict:
    """One row of the ablation table from a finished setting's files (all `seeds`), against the baseline's."""
    seeds = list(seeds)
    check_seeds_agree(run_dir, setting, seeds)
    first = workdir_of(run_dir, setting, seeds[0])
    config = json.loads((first / "config.json").read_text())
    run = json.loads((first / "run.json").read_text())
    accuracy = pd.read_csv(first / "analysis" / "accuracy.csv").set_index(["split", "stage"])
    raw, corrected = accuracy.loc[("test", "uncorrected")], accuracy.loc[("test", "corrected")]
    errors = seed_errors(run_dir, setting, seeds)
    per_seed = errors.mean(axis=0).to_numpy()
    mine = errors.mean(axis=1).rename("error").reset_index()
    base = seed_errors(run_dir, "baseline", seeds).mean(axis=1).rename("error").reset_index()
    paired = mine.merge(base, on=["series_key", "subject_key"], suffixes=("", "_baseline"))
    scored = peers.paired_bootstrap({"setting": paired["error"].to_numpy(),
                                     "baseline": paired["error_baseline"].to_numpy()},
                                    paired["subject_key"].to_numpy(), "baseline", n_boot)["setting"]
    low, high = scored["minus_reference_ci"]
    row = {"setting": setting, "axis": axis, "loss": config["loss"]["name"], "region": config["data"]["region"],
           "data_fraction": config["data"]["fraction"], "train_records": run["train_records"], "seeds": len(seeds),
           "test_mae": float(np.mean(per_seed)), "test_mae_seed_sd": float(np.std(per_seed, ddof=1))
           if len(seeds) > 1 else float("nan"), "test_mae_ci_low": scored["mae_ci"][0],
           "test_mae_ci_high": scored["mae_ci"][1], "minus_baseline": scored["minus_reference"],
           "minus_baseline_ci_low": low, "minus_baseline_ci_high": high,
           "significant": "" if setting == "baseline" else "worse" if low > 0 else "better" if high < 0 else "no",
           "paired_series": len(paired), "test_r2": raw["r2"], "test_r": raw["pearson_r"],
           "gap_age_r_corrected": corrected["gap_age_r"], "test_n": int(raw["n"])}
    associations = pd.read_csv(first / "analysis" / "associations.csv").set_index("term")
    for term in exposure_terms(first, associations):
        row[f"{term}_years"] = associations.loc[term, "effect_years"]
        row[f"{term}_q"] = associations.loc[term, "q"]
    return row


def exposure_terms(workdir: Path, associations: pd.DataFrame) -> list[str]:
    """The exposure terms a row shows: a synthetic cohort's planted (non-null) effects, else every exposure's."""
    planted = workdir / "analysis" / "planted_vs_estimated.csv"
    if planted.is_file():
        table = pd.read_csv(planted)
        return table.loc[table["planted_years"] != 0, "factor"].tolist()
    return associations.index[associations["kind"] == "exposure"].tolist()


def write_table(run_dir: Path, rows: list[dict]) -> pd.DataFrame:
    out = run_dir / "ablation"
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows)
    table.to_csv(out / "ablation.csv", index=False)
    shown = table.drop(columns=["axis"]).copy()
    for column in shown.columns:
        if shown[column].dtype.kind == "f":
            shown[column] = shown[column].map(lambda v: f"{v:.3g}")
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + " --- |" * len(shown.columns)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in shown.itertuples(index=False)]
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    sizes = table[table["axis"].isin(["data size", "all"])].sort_values("train_records")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(sizes["train_records"], sizes["test_mae"], fmt="o-", capsize=3,
                yerr=[(sizes["test_mae"] - sizes["test_mae_ci_low"]).clip(lower=0),
                      (sizes["test_mae_ci_high"] - sizes["test_mae"]).clip(lower=0)])
    ax.set(xlabel="training records (eligible, whole spine)", ylabel="test MAE (years, uncorrected)",
           title="MAE against training-set size (95% CI over test subjects)", xscale="log")
    fig.savefig(out / "mae_vs_data_size.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return table


def define_flags():
    flags.DEFINE_string("run_dir", "runs/default", "a default-run folder (records/, eligibility/, cohort/)")
    flags.DEFINE_string("preset", "cpu", "config preset appended to every setting ('' for the full network)")
    flags.DEFINE_list("only", [], "settings to run (default: all; the baseline always runs)")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "training seeds of every setting (config.seed)")


def main(argv):
    del argv
    f = flags.FLAGS
    run_dir = Path(f.run_dir)
    chosen = [s for s in SETTINGS if not f.only or s[0] in f.only or s[0] == "baseline"]
    seeds = [int(s) for s in f.seeds]
    for setting, _, config_file, argument in chosen:
        for seed in seeds:
            run_setting(run_dir, setting, config_file, argument, f.preset, seed)
    rows = [summarise(run_dir, setting, axis, seeds) for setting, axis, _, _ in chosen]
    table = write_table(run_dir, rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"ablation table: {run_dir / 'ablation' / 'ablation.md'}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
