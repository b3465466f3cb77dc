"""Writes the example data sets of examples/declared/ (run from the repository root; the .npz files are committed):

* digits_labels.npz: scikit-learn's 8x8 digits (the fixed training split emvi's "digits" uses), binarised at 0.5, with
  their labels y and a mask y_mask giving only 100 of them (the semi-supervised VAE);
* regression_counts.npz: counts x (N, 1) from a mixture of three Poisson regressions on covariates c (N, 2);
* clusters.npz: x (N, 2) from three Gaussian clusters whose centres are drawn around 0 (the two-level mixture).
"""

from pathlib import Path

import numpy as np

from emvi.data import load_dataset

OUT = Path(__file__).resolve().parent / "data"


def main() -> None:
    rng = np.random.default_rng(0)
    digits = load_dataset("digits", binarize="static")
    x, y = digits.x.numpy().astype(np.uint8), digits.y.numpy()
    y_mask = np.zeros(len(y), dtype=bool)
    y_mask[rng.choice(len(y), 100, replace=False)] = True
    np.savez_compressed(OUT / "digits_labels.npz", x=x, y=np.where(y_mask, y, -1), y_mask=y_mask)

    n = 600
    c = rng.normal(size=(n, 2)).astype(np.float32)
    z = rng.integers(0, 3, n)
    slopes = np.array([[1.0, 0.0], [-1.0, 0.5], [0.0, -1.0]])
    intercepts = np.array([0.5, 1.5, 2.5])
    rate = np.exp((c * slopes[z]).sum(1) + intercepts[z])
    np.savez_compressed(OUT / "regression_counts.npz", x=rng.poisson(rate)[:, None].astype(np.float32), c=c)

    centres = rng.normal(scale=3.0, size=(3, 2))
    z = rng.integers(0, 3, n)
    np.savez_compressed(OUT / "clusters.npz", x=(centres[z] + rng.normal(size=(n, 2))).astype(np.float32))


if __name__ == "__main__":
    main()
