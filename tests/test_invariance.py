"""Float32 scale and offset invariance of the peer metrics, against float64 NumPy oracles.

Which invariances hold is a property of each formula:

- scale (F -> s F): LogME (the evidence maximised over (alpha, beta) is scale free), H-score and
  regularized H-score (ratios of quadratic forms; Ledoit-Wolf's shrinkage is a ratio too), LFC
  (cosine of kernels), PARC (standardised). Not SFDA (its shrinkage exp(-5 lambda) depends on the
  scale of S_w) and not GBC (absolute variance floor).
- offset (F -> F + c): every centred metric (H-scores, LFC, SFDA, GBC, PARC). Not LogME (the
  linear model has no intercept: an offset is a new feature direction).

Where the formula is invariant the float32 value at scales 1e-4, 1e4 (and the repro scales 1e9,
1e-12) and offset 1e3 must be within 1e-2 of the value at scale 1; where it is not, the float32
value must match the float64 oracle on the same float32 values.
"""

import numpy as np
import pytest

import reference_gbc
import reference_hscore
import reference_lfc
import reference_logme
import reference_parc
import reference_sfda
import transrate_jax as tj


def _data(n=200, d=16, classes=4, seed=0, sep=1.0):
  r = np.random.default_rng(seed)
  y = r.integers(0, classes, n)
  f = (r.normal(size=(n, d)) + sep * r.normal(size=(classes, d))[y]).astype(np.float32)
  return f, y


F, Y = _data()
FW, YW = _data(n=40, d=100, classes=3, seed=1)  # n < d: the Gram side

SCALE_INVARIANT = ["logme", "hscore", "regularized_hscore", "lfc", "parc"]
OFFSET_INVARIANT = ["hscore", "regularized_hscore", "lfc", "sfda", "gbc", "parc"]
ORACLE = {"logme": reference_logme.logme, "hscore": reference_hscore.hscore,
          "regularized_hscore": reference_hscore.regularized_hscore, "lfc": reference_lfc.lfc,
          "sfda": reference_sfda.sfda, "gbc": reference_gbc.gbc, "parc": reference_parc.parc}


def _score(name, f, y):
  value = float(getattr(tj, name)(np.asarray(f, np.float32), y))
  assert np.isfinite(value), (name, value)
  return value


@pytest.mark.parametrize("name", SCALE_INVARIANT)
@pytest.mark.parametrize("scale", [1e-4, 1e4, 1e9, 1e-12])
@pytest.mark.parametrize("wide", [False, True])
def test_scale_invariance_float32(name, scale, wide):
  if wide and name == "parc":
    pytest.skip("covered by the n >= d case")
  f, y = (FW, YW) if wide else (F, Y)
  base = _score(name, f, y)
  np.testing.assert_allclose(base, ORACLE[name](f.astype(np.float64), y), rtol=1e-3, atol=1e-4)
  np.testing.assert_allclose(_score(name, f * np.float32(scale), y), base, rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize("name", OFFSET_INVARIANT)
@pytest.mark.parametrize("wide", [False, True])
def test_offset_invariance_float32(name, wide):
  if wide and name in ("sfda", "parc", "gbc"):
    pytest.skip("n < d is singular for SFDA; PARC and GBC reduce by PCA anyway")
  f, y = (FW, YW) if wide else (F, Y)
  np.testing.assert_allclose(_score(name, f + np.float32(1e3), y), _score(name, f, y), rtol=1e-2,
                             atol=1e-4)


@pytest.mark.parametrize("scale", [1e-4, 1e4, 1e5, 1e-6])
def test_sfda_scaled_matches_float64_oracle(scale):
  """SFDA is not scale invariant, but its float32 value is right (and finite) at every scale."""
  f = F * np.float32(scale)
  np.testing.assert_allclose(_score("sfda", f, Y), reference_sfda.sfda(f.astype(np.float64), Y),
                             rtol=1e-2)


@pytest.mark.parametrize("offset", [1e3, 3000.0])
@pytest.mark.parametrize("wide", [False, True])
def test_logme_offset_matches_float64_oracle(offset, wide):
  """LogME is not offset invariant; in float32 it was inf at F + 3000 (the raw F^T F has a
  condition number ~1e8). Now it matches the float64 oracle on the same float32 values."""
  f, y = (FW, YW) if wide else (F, Y)
  g = f + np.float32(offset)
  np.testing.assert_allclose(_score("logme", g, y), reference_logme.logme(g.astype(np.float64), y),
                             rtol=1e-3, atol=1e-4)


def test_large_offset_hscore_lfc():
  """Single-pass centring lost ~10% of H-score at offset 1e6 in float32."""
  g = F + np.float32(1e6)
  g64 = g.astype(np.float64)
  for name in ("hscore", "regularized_hscore", "lfc"):
    np.testing.assert_allclose(_score(name, g, Y), ORACLE[name](g64, Y), rtol=2e-3)


def test_constant_features():
  const = np.full((12, 3), 0.1, np.float32)
  y = np.arange(12) % 3
  for fn in (tj.lfc, tj.parc):
    with pytest.raises(ValueError, match="constant"):
      fn(const, y)
  # H-scores of constant features are defined (no between-class variance): exactly 0.
  assert float(tj.hscore(const, y)) == 0.0
  assert float(tj.regularized_hscore(const, y)) == 0.0
  assert np.isfinite(float(tj.logme(const, y)))


@pytest.mark.parametrize("fn", [tj.sfda, tj.parc, tj.lfc, tj.gbc])
def test_one_class_raises(fn):
  with pytest.raises(ValueError, match="at least 2 classes"):
    fn(F, np.zeros(len(Y), int))


@pytest.mark.parametrize("fn", [tj.sfda, tj.parc])
def test_one_sample_per_class_raises(fn):
  with pytest.raises(ValueError, match="one sample"):
    fn(F[:8], np.arange(8))


def test_parc_needs_two_components():
  with pytest.raises(ValueError, match="2 principal components"):
    tj.parc(F[:, :1], Y)


def test_logme_unbounded_evidence_raises():
  """Targets that are exactly linear in the features (n > d): the evidence has no maximum."""
  r = np.random.default_rng(3)
  f = r.normal(size=(50, 4))
  with pytest.raises(ValueError, match="unbounded"):
    tj.logme(f, f @ np.array([1.0, -2.0, 0.5, 3.0]), regression=True)
