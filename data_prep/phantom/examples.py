"""Draws the README's picture: one synthetic person's spine at 30, 55 and 80 years of biological age.

    python -m data_prep.phantom.examples --out=docs/images

Writes phantoms_by_age.png: mid-sagittal slices (top) and their TotalSpineSeg-convention label maps
(bottom). The same person and scan at each age, so only degeneration changes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from absl import app, flags

from data_prep.phantom import acquisition, anatomy, render

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FLAGS = flags.FLAGS
AGES = (30.0, 55.0, 80.0)


def draw(out: Path, person_seed: int = 21, scan_seed: int = 4) -> Path:
    fig, axes = plt.subplots(2, len(AGES), figsize=(3.2 * len(AGES), 11), constrained_layout=True)
    for column, age in enumerate(AGES):
        spine = anatomy.draw_spine(person_seed, age, "F", "")
        rng = np.random.default_rng(scan_seed)
        acq = acquisition.draw_acquisition(rng, "site_B", render.spine_length(spine), 0.0)
        image, labels = render.render(spine, acq, rng)
        mid = int(np.argmin(np.abs(acq.slice_positions()[:, 0] - acq.spine_top[0])))
        axes[0, column].imshow(image[mid], cmap="gray", vmin=0, vmax=np.percentile(image[mid], 99.7))
        axes[0, column].set_title(f"biological age {age:.0f}")
        shown = np.ma.masked_equal(labels[mid], 0)
        axes[1, column].imshow(image[mid], cmap="gray", vmin=0, vmax=np.percentile(image[mid], 99.7))
        axes[1, column].imshow(shown, cmap="nipy_spectral", alpha=0.6, interpolation="nearest")
        for row in range(2):
            axes[row, column].set_axis_off()
    fig.suptitle("spinejax synthetic phantom: one person at three ages (mid-sagittal T2, labels below)")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "phantoms_by_age.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def define_flags() -> None:
    """Command-line flags, defined only when this module is the program (so others can import it)."""
    flags.DEFINE_string("out", "docs/images", "Folder for the PNG.")


def main(argv: list[str]) -> None:
    del argv
    print(f"wrote {draw(Path(FLAGS.out))}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
