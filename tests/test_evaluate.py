"""Checkpoint evaluation, Grad-CAM and the report, on the model the training test trained."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import ablation, anatomy_ceiling, eligibility_truth, gradcam, peers, report
from configs import eligibility as eligibility_config
from data_prep.normal import eligibility
from spinejax import workdir as workdir_format
from spinejax.errors import InputError
from spinejax.scans import spine_labels


def test_every_record_is_predicted_once_with_its_keys(evaluated, training_records):
    workdir, metrics = evaluated
    index = pd.read_csv(training_records / "index.csv", dtype=str)
    evaluations = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    best = min((m["val_mae"], m["step"]) for m in evaluations if m["kind"] == "eval")[1]
    assert metrics["checkpoint_step"] == best  # 'best' restores the step of the lowest validation MAE
    for split in ("train", "validation", "test"):
        table = pd.read_csv(workdir / "predictions" / f"{split}.csv", dtype={"series_key": str})
        expected = index[(index.region == "lumbar") & (index.split == split)]
        assert sorted(table["series_key"]) == sorted(expected["series_key"])
        assert table["predicted_age"].notna().all() and (table["split"] == split).all()
        assert metrics["splits"][split]["all"]["n"] == len(table)
        merged = table.merge(expected[["series_key", "age"]], on="series_key", suffixes=("", "_index"))
        assert (merged["age"] - merged["age_index"].astype(float)).abs().max() < 1e-6
    sites = [k for k in metrics["splits"]["test"] if k.startswith("site=")]
    assert sum(metrics["splits"]["test"][k]["n"] for k in sites) == metrics["splits"]["test"]["all"]["n"]


def test_best_latest_and_step_restore_the_right_checkpoint(evaluated):
    workdir, metrics = evaluated
    assert workdir_format.restore(workdir, "latest")[2] == 160
    assert workdir_format.restore(workdir, str(metrics["checkpoint_step"]))[2] == metrics["checkpoint_step"]
    with pytest.raises(InputError, match="no checkpoint '7'"):
        workdir_format.restore(workdir, "7")


def test_region_shares_of_a_map_by_hand():
    labels = np.zeros((2, 4, 4), np.uint8)
    labels[0, 0] = spine_labels.vertebra_label("L1")
    labels[0, 1] = spine_labels.disc_label("L1-L2")
    labels[1, 0] = spine_labels.vertebra_label("C3")
    mask = np.zeros_like(labels)
    mask[:, :3] = 1
    cam = np.zeros(labels.shape)
    cam[0, 0], cam[0, 1], cam[1, 0], cam[1, 2], cam[1, 3] = 1.0, 2.0, 1.0, 1.0, 3.0
    shares = gradcam.region_shares(cam, labels, mask)
    assert shares == pytest.approx({"cervical": 1 / 8, "thoracic": 0.0, "lumbar": 3 / 8, "outside_mask": 3 / 8,
                                    "other_spine": 1 / 8, "discs": 2 / 8, "vertebrae": 2 / 8})


def test_gradcam_maps_the_trained_model_onto_the_records_labels(evaluated):
    workdir, _ = evaluated
    # The model's own gradient (Flax perturb) equals the gradient through its pooling and dense head, written out.
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from spinejax import losses, models

    config, run, head = workdir_format.load_run(workdir)
    state, _, _, _ = workdir_format.restore(workdir, "best")
    model = models.build(config.model, head.outputs)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    volume = np.random.default_rng(0).normal(size=(2, *run["grid"], 1)).astype(np.float32)
    cam, age = gradcam.gradcam_fn(model, head)(variables, volume)
    _, features = model.apply(variables, volume, train=False, return_features=True)
    age_of = lambda f: losses.predicted_age(nn.Dense(head.outputs).apply(
        {"params": state.params["Dense_0"]}, f.mean(axis=(1, 2, 3))), head)
    expected_age, pullback = jax.vjp(age_of, features)
    weights = pullback(jnp.ones_like(expected_age))[0].mean(axis=(1, 2, 3), keepdims=True)
    expected = jax.image.resize(jax.nn.relu((weights * features).sum(-1)), cam.shape, "linear")
    np.testing.assert_allclose(age, expected_age, rtol=1e-5)
    np.testing.assert_allclose(cam, np.maximum(expected, 0), rtol=1e-4, atol=1e-6 * float(np.abs(expected).max()))
    summary = gradcam.run(workdir, n=4).set_index("share")
    assert (workdir / "gradcam" / "examples.png").stat().st_size > 10_000
    means = summary["mean"]
    assert means[["cervical", "thoracic", "lumbar", "other_spine", "outside_mask"]].sum() == pytest.approx(1.0)
    assert means["cervical"] == 0.0  # lumbar crops hold no cervical level
    assert means["lumbar"] > means["thoracic"]
    assert summary["records"].iloc[0] == len(pd.read_csv(workdir / "predictions" / "test.csv"))


def test_report_holds_every_table_and_figure(evaluated, training_records, training_records_secret, tmp_path):
    workdir, _ = evaluated
    cohort = training_records.parent / "cohort"
    truth = cohort / "ground_truth.json"
    eligibility.run(cohort, tmp_path / "eligibility", eligibility_config.get_config(), training_records_secret)
    found = eligibility_truth.check(cohort, tmp_path / "eligibility", training_records_secret, seeds=[])["detection"]
    results = report.analyse(workdir, method="residual", fit_on="all", pooled=True, ground_truth=str(truth))
    accuracy = results["accuracy"].set_index(["split", "stage"])
    assert len(accuracy) == 4
    # Residual correction fitted on all validation subjects leaves no gap-age correlation there.
    assert abs(accuracy.loc[("validation", "corrected"), "gap_age_r"]) < 1e-6
    assert accuracy.loc[("test", "uncorrected"), "mae"] == pytest.approx(
        results["table"].query("split == 'test'").eval("abs(predicted_age - age)").mean())
    planted = pd.read_csv(workdir / "analysis" / "planted_vs_estimated.csv")
    assert set(planted["factor"]) == set(json.loads(truth.read_text())["planted_effects_years"])
    path = report.write_html(workdir, results, eligibility_dir=str(tmp_path / "eligibility"))
    page = path.read_text()
    # predicted against age, Bland-Altman, gap against age, SAG by factor, forest, the three eligibility
    # pictures; Grad-CAM when drawn
    drawn = len(list((workdir / "gradcam").glob("*.png"))) if (workdir / "gradcam").is_dir() else 0
    assert len(re.findall(r"<img alt=.figure. src=.data:image/png;base64,", page)) == 5 + 3 + drawn
    for title in ("Accuracy before and after bias correction", "Bland-Altman", "Associations", "Provenance",
                  "Normal-spine eligibility", "recall: spondylolisthesis", "common_clusters"):
        assert title in page
    assert f"<td>{found['abnormal']}</td>" in page and f"<td>{found['cases']}</td>" in page
    for name in ("bias_correction.json", "sag.csv", "accuracy.csv", "associations.csv", "peers.csv"):
        assert (workdir / "analysis" / name).is_file()
    assert "The CNN against predictors that never see the image" in page


def test_peers_are_fitted_on_the_cnns_training_series_and_scored_on_its_test_people(evaluated):
    workdir, _ = evaluated
    table = peers.peer_table(workdir, n_boot=500).set_index(["evaluated", "population", "model"]).sort_index()
    index = pd.read_csv(Path(json.loads((workdir / "config.json").read_text())["data"]["records_dir"]) / "index.csv")
    lumbar = index[index["region"] == "lumbar"]
    train, test = lumbar[lumbar["split"] == "train"], lumbar[lumbar["split"] == "test"]
    predictions = pd.read_csv(workdir / "predictions" / "test.csv")
    mean = table.loc[("test", "all", "training_mean")]
    assert mean["training_series"] == len(train) and mean["series"] == len(test)
    assert mean["mae"] == pytest.approx((test["age"] - train["age"].mean()).abs().mean())
    cnn = table.loc[("test", "all", "cnn")]
    assert cnn["mae"] == pytest.approx((predictions["predicted_age"] - predictions["age"]).abs().mean())
    assert mean["minus_cnn"] == pytest.approx(mean["mae"] - cnn["mae"])
    for _, row in table.iterrows():
        assert row["mae_ci_low"] <= row["mae"] <= row["mae_ci_high"]
        assert row["minus_cnn_ci_low"] <= row["minus_cnn"] <= row["minus_cnn_ci_high"]
    # The synthetic grades carry age (degeneration grows with it): a report reader beats the training mean.
    pooled = table.loc["validation+test", "all"]
    assert pooled.loc["report_ridge", "mae"] < pooled.loc["training_mean", "mae"] - 2
    assert pooled.loc["training_mean", "cnn_significantly"] == "better"


def test_anatomy_ceiling_scores_each_model_on_the_runs_series_against_report_boosting(
        evaluated, training_records, training_records_secret, tmp_path):
    workdir, _ = evaluated
    truth = json.loads((training_records.parent / "cohort" / "ground_truth.json").read_text())
    # A second "seed": the same run with every prediction 4 years older.
    other = tmp_path / "other"
    (other / "predictions").mkdir(parents=True)
    for name in ("config.json", "run.json"):
        shutil.copy(workdir / name, other / name)
    for split in ("validation", "test"):
        table = pd.read_csv(workdir / "predictions" / f"{split}.csv", dtype={"series_key": str, "subject_key": str})
        table.assign(predicted_age=table["predicted_age"] + 4).to_csv(other / "predictions" / f"{split}.csv",
                                                                      index=False)
    table = anatomy_ceiling.ceiling_table([workdir, other], truth, training_records_secret,
                                          n_boot=500).set_index("model")
    assert set(table.index) == {"report_ridge", "report_boosting", "anatomy_ridge", "anatomy_boosting",
                                "biological_age", "cnn_0", "cnn_1", "cnn_mean"}
    predictions = pd.concat([pd.read_csv(workdir / "predictions" / f"{s}.csv") for s in ("validation", "test")])
    assert (table["series"] == len(predictions)).all()
    error = predictions["predicted_age"] - predictions["age"]
    assert table.loc["cnn_0", "mae"] == pytest.approx(error.abs().mean())
    assert table.loc["cnn_1", "mae"] == pytest.approx((error + 4).abs().mean())
    assert table.loc["cnn_mean", "mae"] == pytest.approx((error + 2).abs().mean())
    assert table.loc["cnn_0", "better"] == pytest.approx(table.loc["report_boosting", "mae"] - error.abs().mean())
    for _, row in table.iterrows():
        assert row["better_ci_low"] <= row["better"] <= row["better_ci_high"]
    # The hidden biological age, which the anatomy and then the report are drawn from, is the best predictor.
    readers = table.loc[["report_ridge", "report_boosting", "anatomy_ridge", "anatomy_boosting"], "mae"]
    assert table.loc["biological_age", "mae"] < readers.min()
    with pytest.raises(InputError, match="not in the ground truth"):  # records keyed with another secret
        anatomy_ceiling.ceiling_table([workdir], truth, b"another-secret-0123456789")


def test_ablation_table_from_finished_settings(evaluated, tmp_path):
    workdir, _ = evaluated
    report.analyse(workdir, method="linear", fit_on="all", pooled=True)
    # Two seeds of two settings: the baseline is the finished run twice; "loss_l2" is a copy whose every test
    # prediction is 3 years further from the true age (whatever the trained model's bias), so its MAE is worse by
    # exactly 3 years on the same series.
    worse = tmp_path / "worse"
    worse.mkdir()
    for name in ("config.json", "run.json"):
        shutil.copy(workdir / name, worse / name)
    for name in ("analysis", "predictions"):
        shutil.copytree(workdir / name, worse / name)
    predictions = pd.read_csv(worse / "predictions" / "test.csv")
    predictions["predicted_age"] += 3.0 * np.where(predictions["predicted_age"] >= predictions["age"], 1.0, -1.0)
    predictions.to_csv(worse / "predictions" / "test.csv", index=False)
    for setting, target in (("baseline", workdir), ("loss_l2", worse)):
        for seed in (0, 1):
            (tmp_path / "ablation" / setting).mkdir(parents=True, exist_ok=True)
            (tmp_path / "ablation" / setting / f"seed{seed}").symlink_to(target, target_is_directory=True)
    rows = [ablation.summarise(tmp_path, s, axis, seeds=[0, 1], n_boot=500)
            for s, axis in (("baseline", "all"), ("loss_l2", "loss"))]
    table = ablation.write_table(tmp_path, rows).set_index("setting")
    accuracy = pd.read_csv(workdir / "analysis" / "accuracy.csv").set_index(["split", "stage"])
    original = pd.read_csv(workdir / "predictions" / "test.csv")
    assert table.loc["baseline", "test_mae"] == pytest.approx(accuracy.loc[("test", "uncorrected"), "mae"])
    assert table.loc["baseline", "minus_baseline"] == 0 and table.loc["baseline", "test_mae_seed_sd"] == 0
    shifted = (original["predicted_age"] - original["age"]).abs().mean() + 3
    assert table.loc["loss_l2", "test_mae"] == pytest.approx(shifted)
    assert table.loc["loss_l2", "minus_baseline"] == pytest.approx(shifted - table.loc["baseline", "test_mae"])
    assert table.loc["loss_l2", "minus_baseline_ci_low"] > 0 and table.loc["loss_l2", "significant"] == "worse"
    assert table.loc["loss_l2", "paired_series"] == len(original) and table.loc["loss_l2", "seeds"] == 2
    assert table.loc["baseline", "region"] == "lumbar" and table["smoking_q"].between(0, 1).all()
    markdown = (tmp_path / "ablation" / "ablation.md").read_text().splitlines()
    assert len(markdown) == 2 + 2 and markdown[2].startswith("| baseline | l1 | lumbar |")
    assert (tmp_path / "ablation" / "mae_vs_data_size.png").stat().st_size > 5_000
    # Seeds of one setting trained with different settings (another batch size) are refused, not averaged.
    odd = tmp_path / "odd"
    shutil.copytree(worse, odd)
    config = json.loads((odd / "config.json").read_text())
    config["batch_size"] += 1
    (odd / "config.json").write_text(json.dumps(config))
    (tmp_path / "ablation" / "loss_huber").mkdir()
    (tmp_path / "ablation" / "loss_huber" / "seed0").symlink_to(worse, target_is_directory=True)
    (tmp_path / "ablation" / "loss_huber" / "seed1").symlink_to(odd, target_is_directory=True)
    with pytest.raises(ValueError, match=r"seeds 0 and 1 were trained with different settings \(batch_size\)"):
        ablation.summarise(tmp_path, "loss_huber", "loss", seeds=[0, 1])
    # A finished setting is redone when it was trained from other folders than the run's (a run folder moved)
    # or its records or eligibility changed since (records rebuilt, a row fixed): what its run.json recorded no
    # longer matches what its config reads now.
    saved = json.loads((workdir / "config.json").read_text())["data"]
    folders = saved["records_dir"], saved["eligibility_csv"]  # this run trained without an eligibility table
    assert ablation.stale_reason(workdir, *folders) is None
    assert ablation.stale_reason(tmp_path / "no run yet", *folders) is None
    assert "another records or eligibility folder" in ablation.stale_reason(workdir, tmp_path / "records", folders[1])
    run = json.loads((odd / "run.json").read_text())
    (odd / "run.json").write_text(json.dumps({**run, "selection_sha256": "0" * 64}))
    assert "changed since" in ablation.stale_reason(odd, *folders)
    # A seed saved before model.pooling existed computed SFCN's mean: it agrees with one saved with 'mean', not
    # with one saved with another pooling.
    legacy = tmp_path / "legacy"
    shutil.copytree(worse, legacy)
    config = json.loads((legacy / "config.json").read_text())
    assert config["model"].pop("pooling") == "mean"
    (legacy / "config.json").write_text(json.dumps(config))
    (tmp_path / "ablation" / "loss_softbin").mkdir()
    (tmp_path / "ablation" / "loss_softbin" / "seed0").symlink_to(worse, target_is_directory=True)
    (tmp_path / "ablation" / "loss_softbin" / "seed1").symlink_to(legacy, target_is_directory=True)
    ablation.check_seeds_agree(tmp_path, "loss_softbin", [0, 1])
    config["model"]["pooling"] = "masked_rows"
    (legacy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"different settings \(model.pooling\)"):
        ablation.check_seeds_agree(tmp_path, "loss_softbin", [0, 1])
