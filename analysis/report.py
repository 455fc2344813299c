"""Bias correction, spine age gap, associations, figures and one self-contained HTML report.

    python -m analysis.report --workdir=DIR [--method=linear|residual|none] [--fit_on=eligible|all]
        [--pooled] [--ground_truth=COHORT/ground_truth.json] [--eligibility_dir=DIR]

Reads DIR/predictions/{validation,test}.csv (spinejax.evaluate) and the records' keyed reports table
(RECORDS_DIR/reports.csv: exposures, covariates and pathology per series, declared in
RECORDS_DIR/cohort_schema.json). Writes DIR/analysis/:
    bias_correction.json   method and coefficients, fitted on validation subjects
    sag.csv                every validation and test record with raw and corrected age and SAG
    accuracy.csv           MAE, RMSE, R2, r and gap-age r per split, before and after correction
    peers.csv              the CNN against the training mean and report-only models (analysis.peers): MAE and
                           paired bootstrap 95% CIs of each difference from the CNN
    associations.csv       SAG ~ factor + age + age^2 + sex + site + covariates per condition and exposure
                           (one row per level of a categorical exposure; test subjects, validation and
                           test pooled with --pooled): effect, 95% CI, HC3 p, BH q
    planted_vs_estimated.csv  with --ground_truth (synthetic cohorts): planted exposure effects against
                           the estimates
    report.html            all of it with the figures embedded (plus Grad-CAM and eligibility pictures
                           when DIR/gradcam/ and the eligibility folder hold them)
"""

from __future__ import annotations

import base64
import html
import importlib.metadata
import json
from pathlib import Path

import pandas as pd
from absl import app, flags

from analysis import associations, figures, peers, spine_age_gap
from spinejax.cohort import schema as cohort_schema
from spinejax.errors import one_line_errors

LIBRARIES = ("jax", "flax", "optax", "orbax-checkpoint", "grain", "numpy", "pandas", "statsmodels", "matplotlib")


def association_data(workdir, method: str = "linear", fit_on: str = "eligible", pooled: bool = False) -> dict:
    """What the association models read, computed without writing anything: the bias-correction
    coefficients, the SAG table, one series per subject joined with its reports row (joined), the exposures
    and covariates the records declare, and the splits used."""
    workdir = Path(workdir)
    config = json.loads((workdir / "config.json").read_text())
    table = spine_age_gap.load_predictions(workdir)
    coefficients, table = spine_age_gap.correct(table, method, fit_on)
    reports_path = Path(config["data"]["records_dir"]) / "reports.csv"
    if not reports_path.is_file():
        raise FileNotFoundError(f"{reports_path}: the records' reports table is needed for the associations")
    declarations = cohort_schema.read_declarations(Path(config["data"]["records_dir"]) / "cohort_schema.json")
    exposures, covariates = declarations["exposures"], declarations["covariates"]
    text_columns = [n for n, s in {**exposures, **covariates}.items() if s["type"] == "categorical"]
    reports = pd.read_csv(reports_path, dtype={"series_key": str, "subject_key": str, "sex": str, "site": str,
                                               **dict.fromkeys(text_columns, str)},
                          keep_default_na=False, na_values=[""]).copy()  # copy: one block, not 220
    splits = ("validation", "test") if pooled else ("test",)
    subjects = associations.one_series_per_subject(table[table["split"].isin(splits)])
    joined = subjects.merge(reports.drop(columns=["subject_key", "split", "age", "sex", "site"]), on="series_key",
                            how="left", validate="one_to_one", indicator=True)
    missing = int((joined.pop("_merge") == "left_only").sum())
    if missing:
        raise ValueError(f"{reports_path}: {missing} of {len(joined)} predicted series are not in the reports "
                         "table; were the predictions made from these records?")
    return {"coefficients": coefficients, "table": table, "joined": joined, "exposures": exposures,
            "covariates": covariates, "splits": splits}


def analyse(workdir, method: str = "linear", fit_on: str = "eligible", pooled: bool = False,
            ground_truth: str | None = None) -> dict:
    """Writes the tables of the module docstring; returns them (DataFrames) with the coefficients."""
    workdir = Path(workdir)
    out = workdir / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    data = association_data(workdir, method, fit_on, pooled)
    coefficients, table, joined = data["coefficients"], data["table"], data["joined"]
    exposures, covariates, splits = data["exposures"], data["covariates"], data["splits"]
    (out / "bias_correction.json").write_text(json.dumps(coefficients, indent=2) + "\n")
    table.to_csv(out / "sag.csv", index=False)
    accuracy = spine_age_gap.accuracy(table)
    accuracy.to_csv(out / "accuracy.csv", index=False)
    peer_table = peers.peer_table(workdir)
    peer_table.to_csv(out / "peers.csv", index=False)
    factors = associations.factor_table(joined, exposures)
    result = associations.associate(joined, factors, exposures, covariates)
    result.insert(0, "subjects", f"{'+'.join(splits)}")
    result.to_csv(out / "associations.csv", index=False)
    planted = None
    if ground_truth:
        planted = json.loads(Path(ground_truth).read_text())["planted_effects_years"]
        associations.against_planted(result, planted).to_csv(out / "planted_vs_estimated.csv", index=False)
    return {"coefficients": coefficients, "table": table, "accuracy": accuracy, "peers": peer_table,
            "associations": result,
            "joined": joined, "factors": factors, "exposures": exposures, "covariates": covariates, "planted": planted,
            "splits": splits}


def write_html(workdir, results: dict, eligibility_dir: str | None = None, figures_dir: str | None = None) -> Path:
    """DIR/analysis/report.html: tables and figures, self-contained (images as data URIs). With
    `figures_dir`, the main figures are also written there as PNG files (the README's pictures)."""
    workdir = Path(workdir)
    test = results["table"][results["table"]["split"] == "test"]
    joined, factors = results["joined"], results["factors"]
    any_level = [c for c in factors.columns if "@" not in c]
    drawn = {"predicted_vs_age": figures.predicted_vs_age(test, "test split"),
             "bland_altman": figures.bland_altman(test), "gap_vs_age": figures.gap_vs_age(test),
             "sag_by_factor": figures.sag_by_factor(joined, factors, any_level, results["exposures"]),
             "forest": figures.forest(results["associations"], results["planted"])}
    if figures_dir:
        Path(figures_dir).mkdir(parents=True, exist_ok=True)
        for name, png in drawn.items():
            (Path(figures_dir) / f"{name}.png").write_bytes(png)
    sections = [
        ("Accuracy before and after bias correction",
         _table(results["accuracy"]) + "<p>Correction uses each person's true age, which inflates R2 and r of "
         "corrected ages: read the uncorrected rows for accuracy.</p>"
         + f"<p>Correction: <code>{html.escape(json.dumps(results['coefficients']))}</code></p>"),
        ("The CNN against predictors that never see the image",
         "<p>Each peer is fitted on the CNN's own training series (analysis/peers.py): the training mean, and "
         "ridge regression and gradient boosting (absolute-error loss) on the graded report alone. minus_cnn is the "
         "peer's MAE minus the CNN's (positive: the CNN is better), with a subject-level paired bootstrap 95% "
         "CI.</p>" + _table(results["peers"])),
        ("Predicted against chronological age (test)", _img(drawn["predicted_vs_age"])),
        ("Bland-Altman (test)", _img(drawn["bland_altman"])),
        ("Gap against age, before and after correction (test)", _img(drawn["gap_vs_age"])),
        ("SAG by condition and exposure (" + "+".join(results["splits"]) + " subjects)",
         _img(drawn["sag_by_factor"])),
        ("Associations", _img(drawn["forest"]) + _table(results["associations"])),
    ]
    if results["planted"]:
        planted = pd.read_csv(workdir / "analysis" / "planted_vs_estimated.csv")
        sections.append(("Planted exposure effects (synthetic cohort) against the estimates", _table(planted)))
    gradcam = sorted((workdir / "gradcam").glob("*.png")) if (workdir / "gradcam").is_dir() else []
    if gradcam:
        shares = workdir / "gradcam" / "region_shares.csv"
        body = "".join(_img(p.read_bytes()) for p in gradcam)
        if shares.is_file():
            body += _table(pd.read_csv(shares))
        sections.append(("Grad-CAM: where the model looks", body))
    if eligibility_dir and Path(eligibility_dir).is_dir():
        sections.append(("Normal-spine eligibility", _eligibility_section(Path(eligibility_dir))))
    sections.append(("Provenance", _provenance(workdir)))
    body = "".join(f"<h2>{html.escape(title)}</h2>\n{content}\n" for title, content in sections)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>spinejax report: {html.escape(workdir.name)}"
            "</title><style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
            "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}"
            "img{max-width:100%;display:block;margin:0.5em 0}</style></head><body>"
            f"<h1>spinejax report: {html.escape(str(workdir))}</h1>\n{body}</body></html>\n")
    path = workdir / "analysis" / "report.html"
    path.write_text(page)
    return path


def _eligibility_section(folder: Path) -> str:
    """Counts, the cluster table, the check against a synthetic truth when there is one, and the pictures."""
    body = ""
    if (folder / "summary.json").is_file():
        body += _table(pd.DataFrame([json.loads((folder / "summary.json").read_text())["counts"]]))
    if (folder / "clusters.csv").is_file():
        clusters = pd.read_csv(folder / "clusters.csv")
        body += _table(clusters[[c for c in clusters.columns if not c.startswith("prevalence_")]])
    if (folder / "truth_check.json").is_file():
        found = json.loads((folder / "truth_check.json").read_text())["detection"]
        row = {k: v for k, v in found.items() if k != "recall_by_kind"}
        row.update({f"recall: {kind}": v for kind, v in found["recall_by_kind"].items()})
        body += "<p>Against the synthetic cohort's planted non-age-related spines:</p>" + _table(pd.DataFrame([row]))
    return body + "".join(_img(p.read_bytes()) for p in sorted(folder.glob("*.png")))


def _img(png: bytes) -> str:
    return f"<img alt='figure' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="")


def _provenance(workdir: Path) -> str:
    metrics = json.loads((workdir / "predictions" / "metrics.json").read_text())
    run = json.loads((workdir / "run.json").read_text())
    versions = {name: importlib.metadata.version(name) for name in LIBRARIES}
    facts = {"checkpoint step": metrics["checkpoint_step"], "plan hash": run["plan_hash"],
             "region": run["region"], "records": metrics["records_dir"], "libraries": versions}
    return (f"<pre>{html.escape(json.dumps(facts, indent=2))}</pre><details><summary>config.json</summary><pre>"
            f"{html.escape((workdir / 'config.json').read_text())}</pre></details>")


def define_flags():
    flags.DEFINE_string("workdir", None, "a trained and evaluated spinejax workdir")
    flags.DEFINE_enum("method", "linear", ["linear", "residual", "none"], "bias correction")
    flags.DEFINE_enum("fit_on", "eligible", ["eligible", "all"], "validation subjects the correction is fitted on")
    flags.DEFINE_bool("pooled", False, "associations on validation and test subjects pooled (default: test)")
    flags.DEFINE_string("ground_truth", None, "synthetic cohorts: ground_truth.json, to compare planted effects")
    flags.DEFINE_string("eligibility_dir", None,
                        "eligibility output folder: its counts, clusters, truth check and pictures go in the report")
    flags.DEFINE_string("figures_dir", None, "also write the main figures there as PNG files")
    flags.mark_flag_as_required("workdir")


def main(argv):
    del argv
    f = flags.FLAGS
    results = analyse(f.workdir, f.method, f.fit_on, f.pooled, f.ground_truth)
    path = write_html(f.workdir, results, f.eligibility_dir, f.figures_dir)
    accuracy = results["accuracy"]
    if "fallback_from" in results["coefficients"]:
        print(f"WARNING: no {results['coefficients']['fallback_from']} bias correction: "
              f"{results['coefficients']['fallback_reason']}; spine age gaps are uncorrected")
    for _, r in accuracy[accuracy["split"] == "test"].iterrows():
        print(f"test, {r['stage']}: MAE {r['mae']:.2f} y, R2 {r['r2']:.3f}, r {r['pearson_r']:.3f}, "
              f"gap-age r {r['gap_age_r']:+.3f} (n={r['n']})")
    table = results["peers"]
    pooled = table[(table["evaluated"] == "validation+test") & (table["model"] != "cnn")]
    for _, r in pooled[pooled["population"] == pooled["population"].iloc[-1]].iterrows():
        print(f"validation+test ({r['population']}, {r['series']} series): {r['model']} MAE {r['mae']:.2f} y, "
              f"minus the CNN's {r['minus_cnn']:+.2f} (95% CI {r['minus_cnn_ci_low']:+.2f} to "
              f"{r['minus_cnn_ci_high']:+.2f}): CNN {r['cnn_significantly']}")
    print(f"report: {path}")


if __name__ == "__main__":
    define_flags()
    app.run(one_line_errors(main))
