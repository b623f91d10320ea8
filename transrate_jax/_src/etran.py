"""ETran: energy-based transferability estimation (classification).

Gholami, Akbari, Wang, Kamranian and Zhang, "ETran: Energy-Based Transferability Estimation",
ICCV 2023. Reference code: ``mgholamikn/ETran`` (commit d4551ed), ``metrics.py``:
``Energy_Score(features, 0.5, 'bot')`` (the energy term) and ``LDA_Score(features, labels)`` (the
LDA classification term), both called by ``evaluate_metric.py``; ``tw.py -me etran`` combines them
over the candidate models as ``0.15 * minmax(energy) + 0.85 * minmax(lda)``.

The paper also defines an SVD-based *regression* score; the public classification pipeline does
not use it (its only trace, ``LDA._solve_eigen2``, is never called), so it is not part of this
classification metric.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from transrate_jax._src import numerics
from transrate_jax._src import registry
from transrate_jax._src import validation

HIGHEST = numerics.HIGHEST

# Defaults of the public code: ``Energy_Score(X, 0.5, 'bot')`` and tw.py's weights.
_ENERGY_PERCENT = 0.5
_ENERGY_WEIGHT = 0.15
_LDA_WEIGHT = 0.85


class ETranDetails(NamedTuple):
  """:func:`etran_details`: the score and its two terms.

  Attributes:
    score: ``energy + lda`` (what :func:`etran` returns).
    energy: the energy term ``S_en``: the mean of the lowest ``logsumexp`` energies.
    lda: the LDA term ``S_lda``: the mean probability of the true class.
  """
  score: jax.Array
  energy: jax.Array
  lda: jax.Array


def _num_low(n: int, energy_percent) -> int:
  """The number of lowest-energy samples averaged: ``int(10 p) * n // 1000``, at least 1."""
  if (isinstance(energy_percent, (bool, np.bool_))
      or not isinstance(energy_percent, (int, float, np.integer, np.floating))
      or not math.isfinite(float(energy_percent))):
    raise ValueError(
        f"energy_percent must be a Python float in [0.1, 100]; got {energy_percent!r}.")
  tenths = int(float(energy_percent) * 10)  # the public code truncates: int(percent * 10)
  if not 1 <= tenths <= 1000:
    raise ValueError(
        f"energy_percent must be in [0.1, 100] (a percentage of the samples, resolved to 0.1); "
        f"got {energy_percent!r}.")
  return max(1, tenths * n // 1000)


def _check_weight(value, name: str) -> float:
  if (isinstance(value, (bool, np.bool_))
      or not isinstance(value, (int, float, np.integer, np.floating))
      or not math.isfinite(float(value))):
    raise ValueError(f"{name} must be a finite Python float; got {value!r}.")
  return float(value)


@functools.partial(jax.jit, static_argnames=("num_classes", "num_low"))
def _etran_kernel(x, y, *, num_classes, num_low):
  n = x.shape[0]
  # Energy term: logsumexp over the feature axis (the features read as logits), mean of the
  # num_low lowest values.
  energy_each = jax.nn.logsumexp(x, axis=1)  # [n]
  lowest = -jax.lax.top_k(-energy_each, num_low)[0]
  energy = jnp.mean(lowest)
  # LDA term. The public LDA projects on all d eigenvectors V of an eigh (a full orthonormal
  # basis), so coef = means V V^T = means and the logits are x mu_c^T - |mu_c|^2 / 2 + log pi_c.
  # The softmax is invariant to a per-row constant, and these logits change by one under a common
  # shift of x and mu: they are computed on centred features (no |offset|^2 cancellation).
  z = numerics.center(x)
  onehot = jax.nn.one_hot(y, num_classes, dtype=x.dtype)  # [n, C]
  counts = jnp.sum(onehot, axis=0)
  means = jnp.matmul(onehot.T, z, precision=HIGHEST) / jnp.maximum(counts, 1.0)[:, None]
  log_prior = jnp.where(counts > 0, jnp.log(jnp.maximum(counts, 1.0) / n), -jnp.inf)
  logits = (numerics.matmul_nt(z, means) - 0.5 * jnp.sum(means * means, axis=1)[None, :]
            + log_prior[None, :])  # [n, C]; empty classes at -inf
  own = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
  lda = jnp.mean(jnp.exp(own - jax.nn.logsumexp(logits, axis=1)))
  return energy, lda


def _terms(features, labels, num_classes, energy_percent):
  x = validation.check_features(features)
  y, c = validation.check_labels(labels, x.shape[0], num_classes=num_classes)
  validation.check_class_structure(labels, c, metric="ETran")
  k = _num_low(x.shape[0], energy_percent)
  return _etran_kernel(x, y, num_classes=c, num_low=k)


def etran(features, labels, *, num_classes: int | None = None,
          energy_percent: float = _ENERGY_PERCENT) -> jax.Array:
  """ETran of one candidate's features for a labelled classification task: ``S_en + S_lda``.

  Higher is better. The two terms, as the public code computes them:

  * energy (``Energy_Score(features, 0.5, 'bot')``): the features are read as logits, each
    sample's energy score is ``E_i = logsumexp_j x_ij`` (free energy with the sign flipped), and ::

        S_en = mean of the k lowest E_i,   k = int(10 p) * n // 1000   (p = energy_percent),

    i.e. the lowest 0.5 % of the samples by default (at least one sample: the public code averages
    an empty set, NaN, when n < 200);
  * LDA (``LDA_Score(features, labels)``): the probability an LDA-style classifier fitted on the
    data gives the true class, ::

        logit_ic = x_i . mu_c - |mu_c|^2 / 2 + log pi_c,   S_lda = mean_i softmax_c(logit_i)[y_i],

    with ``mu_c`` the class means and ``pi_c = n_c / n``. (The public ``LDA`` computes a shrunk
    within-class scatter and an ``eigh`` of ``inv(S_w) S_b``, but keeps all ``d`` eigenvectors
    ``V``, so its ``coef_ = means V V^T`` is the class means and none of that enters the score.)

  The published ranking does not add the raw terms: it min-max normalises each over the candidate
  models and weights them 0.15 / 0.85 (:func:`etran_scores`). This function is the value of one
  candidate alone, the unnormalised sum.

  Numerics: the LDA term is invariant to a common offset of the features (computed on centred
  features, also in float32), the energy term is not; neither is invariant to rescaling.

  Args:
    features: [n, d] float features (the public code uses the penultimate-layer features).
    labels: [n] int class indices in ``0..C-1``.
    num_classes: static ``C``; needed under ``jit``/``vmap``, else ``max(labels) + 1``.
    energy_percent: the percentage of samples (lowest energies) averaged by the energy term,
      resolved to 0.1 as in the public code (``int(10 p)``); in [0.1, 100].

  Returns:
    Scalar ``S_en + S_lda``, in the features' float dtype. The terms: :func:`etran_details`.

  Raises:
    ValueError: bad shapes, dtypes, NaN/inf, bad labels, fewer than two classes present (not
      checked for traced labels), ``energy_percent`` outside [0.1, 100].

  Example:
    >>> score = etran(features, labels)  # doctest: +SKIP

  Reference: Gholami et al., "ETran: Energy-Based Transferability Estimation", ICCV 2023.
  """
  return etran_details(features, labels, num_classes=num_classes,
                       energy_percent=energy_percent).score


def etran_details(features, labels, *, num_classes: int | None = None,
                  energy_percent: float = _ENERGY_PERCENT) -> ETranDetails:
  """:func:`etran` with its terms: an :class:`ETranDetails` ``(score, energy, lda)``.

  Same arguments, validation and numerics as :func:`etran`; works under ``jit`` and ``vmap`` (a
  NamedTuple of arrays).
  """
  energy, lda = _terms(features, labels, num_classes, energy_percent)
  return ETranDetails(score=energy + lda, energy=energy, lda=lda)


def _minmax(t: jax.Array) -> jax.Array:
  """``(t - min t) / (max t - min t)``; all 0 where the term is equal over the candidates."""
  lo, hi = jnp.min(t), jnp.max(t)
  span = hi - lo
  return jnp.where(span > 0, (t - lo) / jnp.where(span > 0, span, 1.0), 0.0)


def etran_scores(features_by_candidate, labels, *, num_classes: int | None = None,
                 energy_percent: float = _ENERGY_PERCENT, energy_weight: float = _ENERGY_WEIGHT,
                 lda_weight: float = _LDA_WEIGHT) -> jax.Array:
  """The published ETran classification scores of a set of candidate models ``[m]``.

  As ``tw.py -me etran`` of the public code: each term is min-max normalised over the candidates,
  then weighted,

      T_m = 0.15 (S_en,m - min S_en) / (max S_en - min S_en)
            + 0.85 (S_lda,m - min S_lda) / (max S_lda - min S_lda),

  so the scores lie in [0, 1] and depend on the whole set (adding a candidate can change every
  score). A term that is equal for every candidate (one candidate, or identical features)
  contributes 0 (the public code divides 0 by 0 there).

  Args:
    features_by_candidate: a sequence of ``m`` feature arrays ``[n, d_m]`` (widths may differ) of
      the same ``n`` target samples, or one stacked ``[m, n, d]`` array.
    labels: [n] int class indices, shared by the candidates.
    num_classes: static ``C``; needed under ``jit``, else ``max(labels) + 1``.
    energy_percent: as in :func:`etran`.
    energy_weight: weight of the normalised energy term (0.15 in the public code).
    lda_weight: weight of the normalised LDA term (0.85 in the public code).

  Returns:
    [m] scores in candidate order, higher is better.

  Raises:
    ValueError: no candidate, a non-finite weight, or any error of :func:`etran` for a candidate.
  """
  energy_weight = _check_weight(energy_weight, "energy_weight")
  lda_weight = _check_weight(lda_weight, "lda_weight")
  if isinstance(features_by_candidate, (np.ndarray, jax.Array)) and np.ndim(
      features_by_candidate) != 3:
    raise ValueError("features_by_candidate must be a sequence of [n, d] arrays or one stacked "
                     f"[m, n, d] array; got shape {np.shape(features_by_candidate)}.")
  candidates = list(features_by_candidate)
  if not candidates:
    raise ValueError("etran_scores needs at least one candidate feature array.")
  terms = [_terms(f, labels, num_classes, energy_percent) for f in candidates]
  dtype = jnp.result_type(*[e for e, _ in terms])
  energy = jnp.stack([e.astype(dtype) for e, _ in terms])
  lda = jnp.stack([s.astype(dtype) for _, s in terms])
  return energy_weight * _minmax(energy) + lda_weight * _minmax(lda)


registry.register_metric(
    "etran", etran, differentiable=True, vmappable=True, across_candidates=etran_scores,
    description="ETran: energy of the features read as logits plus an LDA classifier's "
                "true-class probability (Gholami et al., ICCV 2023)")
