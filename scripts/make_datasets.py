"""Writes transrate_jax/zoo/digits.npz: scikit-learn's digits with a fixed source/target split.

The 1797 8x8 images (values 0..16, uint8) and labels 0..9 are stored with a ``split`` code per
image drawn from a seeded permutation: 0 = source train (45%), 1 = source test (15%),
2 = target train (25%), 3 = target test (15%). Source tasks (what the zoo is pretrained on) use
splits 0/1 only; target tasks use splits 2/3 only, so no zoo model has seen a target image.

Usage: python scripts/make_datasets.py [--seed 0]
"""

import argparse
import pathlib

import numpy as np
from sklearn.datasets import load_digits

FRACTIONS = (0.45, 0.15, 0.25, 0.15)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  digits = load_digits()
  images = digits.images.astype(np.uint8)
  labels = digits.target.astype(np.uint8)
  n = len(labels)
  order = np.random.default_rng(args.seed).permutation(n)
  bounds = np.round(np.cumsum(FRACTIONS) * n).astype(int)
  split = np.empty(n, np.uint8)
  start = 0
  for code, stop in enumerate(bounds):
    split[order[start:stop]] = code
    start = stop
  out = pathlib.Path(__file__).resolve().parents[1] / "transrate_jax" / "zoo" / "digits.npz"
  np.savez_compressed(out, images=images, labels=labels, split=split)
  print(f"wrote {out} ({out.stat().st_size} bytes): counts per split {np.bincount(split)}")


if __name__ == "__main__":
  main()
