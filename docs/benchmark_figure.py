"""Draw docs/benchmark.png: built-in benchmark samples (image, ground truth, masks, round-0 labels).

    python docs/benchmark_figure.py            # seed 0: two `city` and two `voc` train images
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from a2lc_cli.config import Config  # noqa: E402
from a2lc_cli.data.base import VOID  # noqa: E402
from a2lc_cli.data.synthetic import SyntheticSource  # noqa: E402
from a2lc_cli.labelers.simulate import NOISE_VERSION, SimulatedFoundationModel  # noqa: E402

SAMPLES = (("city", 0), ("city", 1), ("voc", 0), ("voc", 3))


def colour(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H,W,3) uint8: class colours, void white."""
    out = np.full((*labels.shape, 3), 255, np.uint8)
    ok = labels != VOID
    out[ok] = palette[labels[ok]]
    return out


def masks(segment: np.ndarray) -> np.ndarray:
    """(H,W,3) uint8: one random colour per mask, uncovered black."""
    rng = np.random.default_rng(0)
    lut = rng.integers(40, 255, (int(segment.max()) + 2, 3)).astype(np.uint8)
    out = lut[segment + 1]
    out[segment < 0] = 0
    return out


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(SAMPLES), 4, figsize=(12, 2.2 * len(SAMPLES)))
    for row, (preset, i) in zip(axes, SAMPLES):
        cfg = Config()
        cfg.source.preset = preset
        src = SyntheticSource(preset=preset, seed=0)
        prop, _ = SimulatedFoundationModel(cfg, src).simulate(i)
        pal = src.classes.palette
        for ax, img, title in zip(row, (src.image("train", i), colour(src.label("train", i), pal),
                                        masks(prop.segment), colour(prop.label0, pal)),
                                  ("image", "ground truth", "masks", "round-0 labels")):
            ax.imshow(img, interpolation="nearest")
            ax.set_title(f"{preset} #{i}: {title}", fontsize=8)
            ax.axis("off")
    fig.suptitle(f"built-in benchmark v{NOISE_VERSION}, seed 0", fontsize=9)
    fig.tight_layout()
    out = ROOT / "docs" / "benchmark.png"
    fig.savefig(out, dpi=110)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
