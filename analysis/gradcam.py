"""Grad-CAM: where in the spine the age model looks.

    python -m analysis.gradcam --workdir=DIR [--n=8] [--split=test] [--checkpoint=best]

For each record, the Grad-CAM map (Selvaraju et al. 2017) of the last convolutional block: channel
weights are the spatial mean of the gradient of the predicted age (years) with respect to that block's
feature map, the map is ReLU(sum of weighted channels), upsampled to the input grid. Writes DIR/gradcam/:
    examples.png       the map over the mid-sagittal slice of `n` records spread over the age range
    region_shares.csv  the share of attribution (sum of the map) falling on cervical, thoracic and lumbar
                       vertebrae and discs, the rest of the spine mask and outside it, and on discs
                       against vertebrae: mean and sd over the split
The records carry the TotalSpineSeg label map on the model's grid, so shares need no other input.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from absl import app, flags, logging

from analysis import figures
from spinejax import input_pipeline, losses, models, records
from spinejax import workdir as workdir_format
from spinejax.scans import spine_labels


def gradcam_fn(model: models.AgeCNN, head: losses.AgeHead):
    """jit-able f(variables, volume [batch, S, H, W, 1]) -> (map [batch, S, H, W] >= 0, predicted age [batch]).

    The gradient comes from the model itself: AgeCNN marks its last feature map with Flax's `perturb`, and the
    gradient of the predicted ages with respect to that perturbation is their gradient with respect to the
    feature map, through whatever pooling and head the model has."""

    def fn(variables, volume):
        _, created = model.apply(variables, volume, train=False, mutable=["perturbations"])
        zeros = jax.tree.map(jnp.zeros_like, created["perturbations"])

        def summed_age(perturbations):  # eval mode: each record's age depends on its own features only
            output, features = model.apply({**variables, "perturbations": perturbations}, volume, train=False,
                                           return_features=True)
            age = losses.predicted_age(output, head)
            return age.sum(), (age, features)

        gradients, (age, features) = jax.grad(summed_age, has_aux=True)(zeros)
        gradient = gradients["features"].astype(jnp.float32)
        weights = gradient.mean(axis=(1, 2, 3), keepdims=True)
        cam = jax.nn.relu((weights * features.astype(jnp.float32)).sum(axis=-1))
        cam = jax.image.resize(cam, (cam.shape[0], *volume.shape[1:4]), "linear")
        return jnp.maximum(cam, 0.0), age

    return fn


def region_shares(cam: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> dict:
    """Shares of the map's sum: per region's vertebrae and discs, the rest of the spine mask, outside it.

    cam, labels (TotalSpineSeg), mask (the records' dilated spine mask): [S, H, W]. cervical + thoracic +
    lumbar + other_spine (canal, cord, tissue within the mask) + outside_mask = 1; discs and vertebrae
    split the vertebra-and-disc part differently. Grad-CAM of a regression output marks what raises the
    predicted age; for young spines little does, and the map can land outside the spine.
    """
    total = float(cam.sum())
    if total <= 0:
        return {}
    share = lambda where: float(cam[where].sum()) / total
    shares = {region: share(np.isin(labels, spine_labels.labels_of_region(region))) for region in spine_labels.REGIONS}
    shares["outside_mask"] = share(mask == 0)
    shares["other_spine"] = 1.0 - sum(shares.values())
    shares["discs"] = share(np.isin(labels, [spine_labels.disc_label(level) for level in spine_labels.DISC_LEVELS]))
    shares["vertebrae"] = share(np.isin(labels, [spine_labels.vertebra_label(v) for v in spine_labels.VERTEBRAE]))
    return shares


def run(workdir, n: int = 8, split: str = "test", checkpoint: str = "best", batch: int = 8) -> pd.DataFrame:
    """Maps of every record of `split`; writes the figure and the shares (module docstring)."""
    workdir = Path(workdir)
    config, run_facts, head = workdir_format.load_run(workdir)
    state, _, step, _ = workdir_format.restore(workdir, checkpoint)
    model = models.build(config.model, head.outputs)
    fn = jax.jit(gradcam_fn(model, head))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    selection = input_pipeline.select(config.data.records_dir, run_facts["region"], split,
                                      plan_hash=run_facts["plan_hash"])
    source = input_pipeline.RecordSource(selection.paths, selection.rows["source_index"])
    rows, examples = [], {}
    chosen = set(selection.rows["age"].sort_values().index[np.linspace(0, len(selection.rows) - 1, n).astype(int)])
    for start in range(0, len(selection.rows), batch):
        decoded = [records.decode(source[i][1], run_facts["plan_hash"])
                   for i in range(start, min(start + batch, len(selection.rows)))]
        if "labels" not in decoded[0]:
            raise ValueError(f"{config.data.records_dir}: records of schema without label maps; rebuild them")
        volume = np.stack([d["volume"].astype(np.float32) for d in decoded])[..., None]
        cams, ages = jax.device_get(fn(variables, volume))
        for k, (d, cam, age) in enumerate(zip(decoded, cams, ages)):
            i = start + k
            rows.append({"series_key": d["series_key"], "age": d["age"], "predicted_age": float(age),
                         **region_shares(cam, d["labels"], d["mask"])})
            if i in chosen:
                examples[i] = (d["volume"].astype(np.float32), d["labels"], cam, d["age"], float(age))
    out = workdir / "gradcam"
    out.mkdir(exist_ok=True)
    table = pd.DataFrame(rows)
    share_columns = [c for c in table.columns if c not in ("series_key", "age", "predicted_age")]
    summary = pd.DataFrame({"share": share_columns, "mean": table[share_columns].mean().to_numpy(),
                            "sd": table[share_columns].std().to_numpy(), "records": len(table),
                            "split": split, "checkpoint_step": step})
    summary.to_csv(out / "region_shares.csv", index=False)
    (out / "examples.png").write_bytes(figures.gradcam_examples([examples[i] for i in sorted(examples)]))
    return summary


def define_flags():
    flags.DEFINE_string("workdir", None, "a trained spinejax workdir")
    flags.DEFINE_integer("n", 8, "examples to draw")
    flags.DEFINE_string("split", "test", "split to map")
    flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step")
    flags.mark_flag_as_required("workdir")


def main(argv):
    del argv
    f = flags.FLAGS
    if not f["verbosity"].present:  # orbax logs every restore at INFO
        logging.set_verbosity(logging.WARNING)
    summary = run(f.workdir, f.n, f.split, f.checkpoint)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"Grad-CAM: {Path(f.workdir) / 'gradcam'}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
