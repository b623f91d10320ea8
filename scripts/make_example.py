"""Regenerates transrate_jax/data/digits_pipeline.npz, the example `transrate-jax score` scores.

Features of scikit-learn's bundled digits data set (1797 8x8 images, 10 classes; no download) at
several stages of one fixed, seeded feature pipeline:

  pixels            the 64 raw pixel intensities (0..16)
  pca_2, pca_8      the leading principal components of the pixels
  pca_32
  random_relu_128   ReLU of a fixed random projection of the standardised pixels (seed 0)
  random_relu_512

Run from the repository root (needs scikit-learn): python scripts/make_example.py
"""

import pathlib

import numpy as np
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

OUT = pathlib.Path(__file__).resolve().parents[1] / "transrate_jax" / "data" / "digits_pipeline.npz"


def main():
  digits = load_digits()
  x = digits.data.astype(np.float64)
  labels = digits.target.astype(np.int64)
  rng = np.random.default_rng(0)
  standard = (x - x.mean(0)) / (x.std(0) + 1e-6)
  stages = {"pixels": x}
  for k in (2, 8, 32):
    stages[f"pca_{k}"] = PCA(n_components=k, svd_solver="full").fit_transform(x)
  for width in (128, 512):
    w = rng.normal(size=(64, width)) / np.sqrt(64)
    b = rng.normal(size=(width,))
    stages[f"random_relu_{width}"] = np.maximum(standard @ w + b, 0.0)
  arrays = {name: v.astype(np.float16) for name, v in stages.items()}
  OUT.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(OUT, labels=labels, **arrays)
  print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB): " +
        ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


if __name__ == "__main__":
  main()
