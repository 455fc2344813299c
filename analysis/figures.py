"""Figures of the report, each a function of tables returning PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _eligible_colours(table):
    if table["eligible"].isin(["True", "False"]).all():
        return np.where(table["eligible"] == "True", "tab:blue", "tab:red"), "blue: eligible, red: not eligible"
    return np.full(len(table), "tab:blue"), ""


def predicted_vs_age(table: pd.DataFrame, title: str) -> bytes:
    """Predicted (uncorrected and corrected) against chronological age, identity line dashed."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharey=True)
    colours, legend = _eligible_colours(table)
    low, high = table["age"].min() - 5, table["age"].max() + 5
    for ax, column, name in ((axes[0], "predicted_age", "uncorrected"), (axes[1], "corrected_age", "corrected")):
        ax.scatter(table["age"], table[column], s=12, c=colours, alpha=0.7)
        ax.plot([low, high], [low, high], "k--", lw=1)
        mae = np.mean(np.abs(table[column] - table["age"]))
        ax.set(xlabel="chronological age (years)", title=f"{name}: MAE {mae:.2f} y")
    axes[0].set_ylabel("predicted spine age (years)")
    fig.suptitle(f"{title}  {legend}", fontsize=9)
    return png(fig)


def bland_altman(table: pd.DataFrame) -> bytes:
    """Difference (predicted - age) against the mean of the two, with bias and 95% limits of agreement."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    mean = (table["predicted_age"] + table["age"]) / 2
    diff = table["predicted_age"] - table["age"]
    bias, sd = diff.mean(), diff.std()
    ax.scatter(mean, diff, s=12, alpha=0.7)
    for y, style in ((bias, "-"), (bias + 1.96 * sd, "--"), (bias - 1.96 * sd, "--")):
        ax.axhline(y, color="k", ls=style, lw=1)
    ax.set(xlabel="mean of predicted and chronological age (years)", ylabel="predicted - chronological (years)",
           title=f"Bland-Altman (uncorrected): bias {bias:+.2f} y, limits {bias - 1.96 * sd:+.1f} to "
                 f"{bias + 1.96 * sd:+.1f}")
    return png(fig)


def gap_vs_age(table: pd.DataFrame) -> bytes:
    """The gap against age before and after bias correction, with least-squares lines."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, column, name in ((axes[0], "sag_uncorrected", "before correction"), (axes[1], "sag", "after correction")):
        ax.scatter(table["age"], table[column], s=12, alpha=0.7)
        slope, intercept = np.polyfit(table["age"], table[column], 1)
        xs = np.array([table["age"].min(), table["age"].max()])
        ax.plot(xs, slope * xs + intercept, "r-", lw=1.5)
        r = np.corrcoef(table["age"], table[column])[0, 1]
        ax.axhline(0, color="k", lw=0.8)
        ax.set(xlabel="chronological age (years)", title=f"{name}: r(gap, age) = {r:+.2f}")
    axes[0].set_ylabel("spine age gap (years)")
    return png(fig)


def sag_by_factor(data: pd.DataFrame, factors: pd.DataFrame, names: list[str], exposures: dict) -> bytes:
    """Box plots of SAG per group of each factor: without and with a condition or a yes/no exposure, each level
    of a categorical exposure (numbers have no groups and are left out)."""
    groups = []  # (factor, [(label, rows)])
    for name in names:
        spec = exposures.get(name, {"type": "yes_no"})
        if spec["type"] == "categorical":
            groups.append((name, [(level, factors[name] == level) for level in spec["levels"]]))
        elif spec["type"] == "yes_no":
            groups.append((name, [("no", factors[name] == 0.0), ("yes", factors[name] == 1.0)]))
    width = sum(len(g) + 1 for _, g in groups)
    fig, ax = plt.subplots(figsize=(max(6, 0.4 * width), 4.5))
    boxes, positions, ticks, labels, colours = [], [], [], [], []
    x = 0
    for name, levels in groups:
        for k, (label, rows) in enumerate(levels):
            boxes.append(data.loc[rows.to_numpy(), "sag"].to_numpy())
            positions.append(x)
            ticks.append(x)
            labels.append(f"{name.replace('_', ' ')}: {label}" if k == 0 else label)
            colours.append("lightgrey" if k == 0 else "tab:orange")
            x += 1
        x += 1
    parts = ax.boxplot(boxes, positions=positions, widths=0.8, patch_artist=True, showfliers=False)
    for patch, colour in zip(parts["boxes"], colours):
        patch.set_facecolor(colour)
    ax.set_xticks(ticks, labels, rotation=50, ha="right", fontsize=7)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(ylabel="SAG (years, corrected)", title="SAG by factor (grey: without, or the first level)")
    return png(fig)


def forest(associations: pd.DataFrame, planted: dict | None = None) -> bytes:
    """Effect on SAG (years) with 95% CI per factor; filled where q < 0.05; planted effects as crosses."""
    shown = associations.dropna(subset=["effect_years"]).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(shown) + 1.2))
    y = np.arange(len(shown))[::-1]
    for yi, (_, r) in zip(y, shown.iterrows()):
        ax.plot([r["ci_low"], r["ci_high"]], [yi, yi], color="tab:blue", lw=1.2)
        ax.plot(r["effect_years"], yi, "o", color="tab:blue", mfc="tab:blue" if r["significant"] else "white")
        if planted and r["term"] in planted:
            ax.plot(planted[r["term"]], yi, "x", color="tab:red", ms=8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, [f"{f} (n={int(n)}/{int(t)})" for f, n, t in zip(shown["term"], shown["n_with"], shown["n"])],
                  fontsize=7)
    ax.set(xlabel="difference in SAG (years), 95% CI, HC3",
           title="SAG associations (filled: BH q < 0.05" + ("; x: planted effect)" if planted else ")"))
    return png(fig)


def gradcam_examples(examples: list) -> bytes:
    """Grad-CAM over the mid-sagittal slice: examples of (volume, labels, cam [S, H, W], age, predicted)."""
    fig, axes = plt.subplots(1, len(examples), figsize=(1.6 * len(examples), 6), squeeze=False)
    for ax, (volume, labels, cam, age, predicted) in zip(axes[0], examples):
        mid = int(np.argmax((labels > 0).sum(axis=(1, 2))))  # the slice through most of the spine
        ax.imshow(volume[mid], cmap="gray")
        ax.imshow(np.ma.masked_less_equal(cam[mid], 0.05 * cam.max()), cmap="jet", alpha=0.45)
        ax.set_title(f"age {age:.0f}\npred {predicted:.0f}", fontsize=8)
        ax.axis("off")
    fig.suptitle("Grad-CAM of the last convolutional block (mid-sagittal slice; superior at top)", fontsize=9)
    return png(fig)
