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

import numpy as np
import pytest

import reference
import transrate_jax as tj
from cases_transrate import CASES, EPS_VALUES

_REFERENCE = reference.recorded("transrate_reference.json")
_PRESETS = ("tllib", "official")
_RTOL = 1e-8



def test_reference_covers_all_cases():
  for preset in _PRESETS:
    assert set(_REFERENCE[preset]) == set(CASES)
    for case in CASES:
      assert set(_REFERENCE[preset][case]) == {repr(e) for e in EPS_VALUES}


@pytest.mark.parametrize("preset", _PRESETS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_numbers_follow_design_formula(case, preset):
  # Guards the JSON against drift of the case generators, and checks the description of each
  # public implementation in the presets' docstrings (transrate.resolve_config).
  features, labels = CASES[case]()
  for eps in EPS_VALUES:
    np.testing.assert_allclose(
        reference.transrate(features, labels, eps, preset=preset), _REFERENCE[preset][case][repr(eps)],
        rtol=1e-9, err_msg=f"{preset} {case} eps={eps}")


@pytest.mark.branch_free(preset=("official",))  # its normalisation and rank rule stay compiled
@pytest.mark.parametrize("preset", _PRESETS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_preset_matches_public_code(case, preset):
  features, labels = CASES[case]()
  for eps in EPS_VALUES:
    got = tj.transrate(features, labels, eps=eps, preset=preset)
    assert np.asarray(got).dtype == np.float64
    np.testing.assert_allclose(
        float(got), _REFERENCE[preset][case][repr(eps)], rtol=_RTOL,
        err_msg=f"{preset} {case} eps={eps}")
