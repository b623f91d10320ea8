"""TransRate presets against numbers produced by the public reference code.

``tests/data/transrate_reference.json`` holds, for every case of ``tests/cases_transrate.py`` and
eps in {1e-4, 1e-2, 1e-6}, the score returned by
  * ``tllib``: thuml/Transfer-Learning-Library ``tllib.ranking.transrate``;
  * ``official``: the Long-Kai/TransRate pipeline (row L2-normalise, centre, ``pre_transrate``,
    ``process_transrate_logs``, ``rz - rzc``),
run in float64 (see tests/data/README.md, "TransRate presets"). ``preset="tllib"`` and
``preset="official"`` must match them to 1e-8 relative in float64.
"""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest

from cases_transrate import CASES, EPS_VALUES

_REFERENCE = json.loads(
    (pathlib.Path(__file__).parent / "data" / "transrate_reference.json").read_text())
_PRESETS = ("tllib", "official")
_RTOL = 1e-8


@pytest.fixture(autouse=True)
def _x64():
  with jax.enable_x64(True):
    yield


def _formula(features, labels, eps, preset):
  """DESIGN.md section 1 in float64 NumPy (Cholesky log-determinants, covariance side)."""
  z = np.asarray(features, np.float64)
  if preset == "official":
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
  z = z - z.mean(axis=0)
  if preset == "official":
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
  n, d = z.shape

  def rate(m):
    a = np.eye(d) + m.T @ m / (m.shape[0] * eps)
    return np.sum(np.log(np.diag(np.linalg.cholesky(a))))  # = 1/2 logdet

  num_classes = int(labels.max()) + 1
  score = rate(z)
  for c in range(num_classes):
    n_c = int(np.sum(labels == c))
    weight = n_c / n if preset == "official" else 1.0 / num_classes
    score -= weight * rate(z[labels == c])
  if preset == "official":
    score /= np.linalg.matrix_rank(z.T @ z / n)
  return score


def test_reference_covers_all_cases():
  for preset in _PRESETS:
    assert set(_REFERENCE[preset]) == set(CASES)
    for case in CASES:
      assert set(_REFERENCE[preset][case]) == {repr(e) for e in EPS_VALUES}


@pytest.mark.parametrize("preset", _PRESETS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_numbers_follow_design_formula(case, preset):
  # Guards the JSON against drift of the case generators, and checks DESIGN.md's description
  # of each public implementation.
  features, labels = CASES[case]()
  for eps in EPS_VALUES:
    np.testing.assert_allclose(
        _formula(features, labels, eps, preset), _REFERENCE[preset][case][repr(eps)],
        rtol=1e-9, err_msg=f"{preset} {case} eps={eps}")


@pytest.fixture(scope="module")
def transrate_fn():
  # Imported here so that a missing module fails these tests, not the collection of the suite.
  from transrate_jax._src.transrate import transrate
  return transrate


@pytest.mark.parametrize("preset", _PRESETS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_preset_matches_public_code(transrate_fn, case, preset):
  features, labels = CASES[case]()
  for eps in EPS_VALUES:
    got = transrate_fn(features, labels, eps=eps, preset=preset)
    assert np.asarray(got).dtype == np.float64
    np.testing.assert_allclose(
        float(got), _REFERENCE[preset][case][repr(eps)], rtol=_RTOL,
        err_msg=f"{preset} {case} eps={eps}")
