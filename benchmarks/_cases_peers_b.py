"""Benchmark cases for LEEP, NCE, N-LEEP, GBC, LFC, SFDA and PARC (used by bench_metrics.py).

Each case: ``ours(features, labels)`` (transrate_jax) and ``naive(features_np, labels_np)`` (NumPy /
scikit-learn written the way the public code computes it). LEEP and NCE need source-model outputs:
both sides derive them from the features with the same fixed random projection to 1000 source
classes (softmax for LEEP, argmax for NCE), computed once per feature array and cached, so the
timings cover the metric only. ``floor`` lists the products and factorisations an exact method
must do (timed by benchmarks/_cases_floor.py); ``skip`` names shapes too large to run;
``naive_vectorised`` (optional) is a faster NumPy rewrite of the public code's way, timed and
reported beside it (NCE: the public code fills its table by a Python loop over the samples).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.stats
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from _cases_floor import centred, spd
from transrate_jax._src.gbc import gbc
from transrate_jax._src.leep import leep, nce, nleep
from transrate_jax._src.lfc import lfc
from transrate_jax._src.parc import parc
from transrate_jax._src.sfda import sfda

NUM_SOURCE = 1000
_CACHE = {}


def _source_logits(features):
  x = np.asarray(features, np.float32)
  key = (x.shape, x[:2].tobytes())
  if key not in _CACHE:
    w = np.random.default_rng(0).normal(size=(x.shape[1], NUM_SOURCE)).astype(np.float32)
    logits = (x @ w) / np.sqrt(x.shape[1])
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    _CACHE[key] = (p, logits.argmax(axis=1), jnp.asarray(p), jnp.asarray(logits.argmax(axis=1)))
  return _CACHE[key]


def _ours_leep(features, labels):
  return leep(_source_logits(features)[2], labels)


def _ours_nce(features, labels):
  return nce(_source_logits(features)[3], labels)


def _naive_leep(features, labels):  # tllib.ranking.log_expected_empirical_prediction
  theta = _source_logits(features)[0].astype(np.float64)
  n = theta.shape[0]
  c = int(labels.max()) + 1
  joint = np.zeros((c, theta.shape[1]))
  for i in range(c):
    joint[i] = theta[labels == i].sum(axis=0) / n
  cond = (joint / joint.sum(axis=0, keepdims=True)).T
  pred = theta @ cond
  return float(np.mean(np.log(pred[np.arange(n), labels])))


def _nce_from_joint(joint):
  """-H(Y | Z) of a joint table [C, Cs] of (target, source) frequencies, the public code's way."""
  pz = joint.sum(axis=0, keepdims=True)
  mask = pz.reshape(-1) != 0
  cond = (joint[:, mask] / pz[:, mask]).T + 1e-20
  return float(-np.sum(np.sum(-cond * np.log(cond), axis=1) * pz.reshape(-1)[mask]))


def _naive_nce(features, labels):  # tllib.ranking.negative_conditional_entropy
  """The public code's way: the joint table filled by a Python loop over the n samples."""
  z = _source_logits(features)[1]
  n = len(z)
  joint = np.zeros((int(labels.max()) + 1, int(z.max()) + 1))
  for source, target in zip(z, labels):
    joint[int(target), int(source)] += 1.0 / n
  return _nce_from_joint(joint)


def _naive_nce_vectorised(features, labels):
  """The same table filled by one unbuffered ``np.add.at`` (faster than the public code)."""
  z = _source_logits(features)[1]
  joint = np.zeros((int(labels.max()) + 1, int(z.max()) + 1))
  np.add.at(joint, (labels, z), 1.0 / len(z))
  return _nce_from_joint(joint)


def _naive_nleep(features, labels):  # PCA(0.8) + GaussianMixture(5C) + LEEP (SFDA's NLEEP, with log)
  c = int(labels.max()) + 1
  xp = PCA(n_components=0.8).fit_transform(np.asarray(features, np.float64))
  prob = GaussianMixture(n_components=5 * c, random_state=0).fit(xp).predict_proba(xp)
  n = len(labels)
  joint = np.stack([prob[labels == k].sum(axis=0) / n for k in range(c)])
  pred = prob @ (joint / joint.sum(axis=0)).T
  return float(np.mean(np.log(pred[np.arange(n), labels])))


def _naive_gbc(features, labels):  # stable_transfer gbc.py (spherical) on PCA(64) features
  x = PCA(n_components=64, svd_solver="full").fit_transform(features) if features.shape[1] > 64 else features
  stats = []
  for k in np.unique(labels):
    xc = x[labels == k]
    stats.append((xc.mean(axis=0), np.maximum(xc.var(axis=0), 1e-4).mean()))
  total = 0.0
  for i, (m1, s1) in enumerate(stats):
    for j, (m2, s2) in enumerate(stats):
      if i != j:
        s = (s1 + s2) / 2
        total += np.exp(-(np.sum((m1 - m2) ** 2 / s) / 8 + 0.5 * (np.log(s) - 0.5 * np.log(s1) - 0.5 * np.log(s2))))
  return float(-total)


def _naive_lfc(features, labels):  # centred kernel alignment with n x n kernels
  x = np.asarray(features, np.float64)
  k = x @ x.T
  k = k - k.mean(axis=0) - k.mean(axis=1)[:, None] + k.mean()
  lab = np.where(labels[:, None] == labels[None, :], 1.0, -1.0)
  lab = lab - lab.mean(axis=0) - lab.mean(axis=1)[:, None] + lab.mean()
  return float(np.sum(k * lab) / (np.linalg.norm(k) * np.linalg.norm(lab)))


def _fisher(x, labels, shrinkage):  # TencentARC/SFDA metrics.SFDA fit + predict_proba
  classes = np.unique(labels)
  d = x.shape[1]
  priors = np.bincount(labels) / len(labels)
  means = np.stack([x[labels == c].mean(axis=0) for c in classes])
  sw = sum(p * np.cov(x[labels == c].T, bias=1) for p, c in zip(priors, classes))
  if shrinkage is None:
    v = sw.sum(axis=1)
    for _ in range(3):
      u = sw @ v; u /= np.linalg.norm(u); v = sw @ u; v /= np.linalg.norm(v)
    shrinkage = max(np.exp(-5 * (v @ sw @ u)), 1e-10)
  cov = np.cov(x.T, bias=1)
  st = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / d * np.eye(d)
  sws = (1 - shrinkage) * sw + shrinkage * np.trace(sw) / d * np.eye(d)
  evals, evecs = scipy.linalg.eigh(st - sws, sws)
  evecs = evecs[:, np.argsort(evals)[::-1]]
  coef = means @ evecs @ evecs.T
  scores = x @ coef.T - 0.5 * np.diag(means @ coef.T) + np.log(priors)
  scores -= scores.max(axis=1, keepdims=True)
  prob = np.exp(scores)
  return prob / prob.sum(axis=1, keepdims=True), shrinkage, means


def _naive_sfda(features, labels):  # TencentARC/SFDA metrics.SFDA_Score
  x = np.array(features, np.float64)
  n, c = len(labels), len(np.unique(labels))
  prob, shrinkage, means = _fisher(x, labels, None)
  prob = np.exp(prob) / np.exp(prob).sum(axis=1, keepdims=True)
  outer = (means.sum(axis=0) - means) / (c - 1)
  p = prob[np.arange(n), labels][:, None]
  x = p * x + (1 - p) * outer[labels]
  prob, _, _ = _fisher(x, labels, shrinkage)
  return float(np.mean(prob[np.arange(n), labels]))


def _naive_parc(features, labels):  # dbolya/parc methods.PARC (randomised PCA, as published)
  z = PCA(n_components=32, svd_solver="randomized", random_state=1919, iterated_power=1).fit_transform(features)
  z = StandardScaler().fit_transform(z)
  c = int(labels.max()) + 1
  rdm1 = 1 - np.corrcoef(z)
  rdm2 = 1 - np.corrcoef(np.eye(c)[labels])
  iu = np.triu_indices(len(labels), 1)
  return float(scipy.stats.spearmanr(rdm1[iu], rdm2[iu])[0] * 100)


def _floor_leep(features, labels):
  """LEEP's unavoidable reads of the [n, Cs] probabilities: the joint [C, Cs] (class sums), then
  each sample's expected prediction of its own class only, theta_i . P(y_i | z) ([n])."""
  theta = _source_logits(features)[0]
  c = int(labels.max()) + 1
  joint = np.eye(c, dtype=theta.dtype)[labels].T @ theta
  cond = joint / joint.sum(axis=0, keepdims=True)
  return [("class_sums", [(theta, labels, c)]), ("take_rowdot", [(theta, cond, labels)])]


def _floor_nce(features, labels):
  """NCE's joint counts of (target, source) label pairs: one histogram of n keys."""
  z = _source_logits(features)[1]
  c = int(labels.max()) + 1
  return [("histogram", [(labels.astype(np.int64) * NUM_SOURCE + z, c * NUM_SOURCE)])]


def _pca_floor(features, k=None, variance=None):
  """An exact PCA: Z^T Z (cheaper side), the top-k eigenpairs (all, when k follows from the
  variance), the projection. Returns (stages, projected features)."""
  z = centred(features)
  n, d = z.shape
  s = z.T @ z if n >= d else z @ z.T
  evals, vecs = np.linalg.eigh(s)
  evals, vecs = evals[::-1], vecs[:, ::-1]
  if variance is not None:
    k = int(min(np.searchsorted(np.cumsum(evals) / evals.sum(), variance, side="right") + 1, len(evals)))
  stages = [("gram", [(z,)]), ("eigh", [(s,)]) if variance is not None else ("eigh_top", [(s, k)])]
  if n >= d:
    axes = vecs[:, :k].copy()
    stages.append(("matmul", [(z, axes)]))
    return stages, z @ axes
  return stages, vecs[:, :k] * np.sqrt(np.maximum(evals[:k], 0))  # the components are U S


def _nleep_too_large(features, labels):
  _, _, ns = _nleep_sizes(features, labels)
  if ns > 5e10:
    return (f"one EM step of {ns:.1e} multiply-adds (5C full covariances in the PCA(0.8) "
            "dimension): the naive scikit-learn fit takes hours; run it at a smaller shape")
  return None


def _nleep_sizes(features, labels):
  z = centred(features)
  s = z.T @ z if z.shape[0] >= z.shape[1] else z @ z.T
  evals = np.linalg.eigvalsh(s)[::-1]
  k = int(min(np.searchsorted(np.cumsum(evals) / evals.sum(), 0.8, side="right") + 1, len(evals)))
  comps = 5 * (int(labels.max()) + 1)
  return k, comps, float(z.shape[0]) * k * k * comps


def _floor_nleep(features, labels):
  """The PCA(0.8) and ONE EM step of the 5C-component full-covariance mixture (a lower bound:
  the fit runs many): E-step x [P_1 .. P_K] ([n, k] x [k, K k]), M-step K weighted k x k
  covariances and their Choleskys."""
  stages, x = _pca_floor(features, variance=0.8)
  n, k = x.shape
  comps = 5 * (int(labels.max()) + 1)
  rng = np.random.default_rng(0)
  prec = np.tile(np.eye(k, dtype=np.float32), (1, comps))  # [k, K k]
  resp = rng.dirichlet(np.ones(comps), size=n).astype(np.float32)  # [n, K]
  weighted = [np.sqrt(resp[:, j:j + 1]) * x for j in range(comps)]
  cov = x.T @ x / n
  stages += [("matmul", [(x, prec)]), ("gram", [(w,) for w in weighted]),
             ("cholesky", [(spd(cov),) for _ in range(comps)])]
  return stages


def _floor_gbc(features, labels):
  """The exact top-64 PCA, then the per-class means and (diagonal) variances: class sums of the
  components and of their squares."""
  c = int(labels.max()) + 1
  if features.shape[1] <= 64:
    x = centred(features)
    stages = []
  else:
    stages, x = _pca_floor(features, k=64)
  return stages + [("class_sums", [(np.concatenate([x, x * x], axis=1), labels, c)])]


def _floor_lfc(features, labels):
  """|Z^T Z|_F (= |Z Z^T|_F, the cheaper side) and the class sums |E^T Z|_F^2."""
  z = centred(features)
  return [("gram", [(z,)]), ("class_sums", [(z, labels, int(labels.max()) + 1)])]


def _floor_sfda(features, labels):
  """Two Fisher fits (the features, then the mixed ones), each: the class means, the within-class
  scatter (Z^T Z of the residuals), a Cholesky of the shrunk scatter, the two triangular solves
  for means S^{-1}, and the logits x coef^T ([n, d] x [d, C])."""
  x = centred(features)
  c = int(labels.max()) + 1
  means = (np.eye(c, dtype=x.dtype)[labels].T @ x) / np.bincount(labels, minlength=c)[:, None]
  resid = x - means[labels]
  sw = spd(resid.T @ resid)
  chol = np.linalg.cholesky(sw)
  two = lambda *args: [args, args]  # noqa: E731
  return [("class_sums", two(x, labels, c)), ("gram", two(resid)), ("cholesky", two(sw)),
          ("trsm", two(chol, means.T.copy()) + two(chol, means.T.copy())),
          ("matmul", two(x, means.T.copy()))]


def _floor_parc(features, labels):
  """The exact top-32 PCA and the n x n correlation of the standardised components (one
  [n, 32] x [32, n] product). Not counted: ranking the n (n - 1) / 2 pairs (Spearman)."""
  stages, z = _pca_floor(features, k=min(32, *features.shape))
  z = (z - z.mean(axis=0)) / np.maximum(z.std(axis=0), 1e-30)
  return stages + [("rows_gram", [(z.astype(np.float32),)])]


CASES = [
    {"metric": "LEEP", "paper": "Nguyen et al., ICML 2020", "function": "transrate_jax.leep",
     "ours": _ours_leep, "naive": _naive_leep, "rtol": 1e-4,
     "floor": _floor_leep,
     "floor_what": "the [C, Cs] joint (class sums of [n, Cs]), n rows . P(y_i | z)"},
    {"metric": "NCE", "paper": "Tran et al., ICCV 2019", "function": "transrate_jax.nce",
     "ours": _ours_nce, "naive": _naive_nce, "rtol": 1e-4,
     "naive_vectorised": _naive_nce_vectorised, "naive_vectorised_what": "np.add.at table",
     "floor": _floor_nce, "floor_what": "one histogram of the n (y, z) pairs"},
    {"metric": "N-LEEP", "paper": "Li et al., CVPR 2021", "function": "transrate_jax.nleep",
     "ours": lambda f, y: nleep(f, y, key=jax.random.key(0)), "naive": _naive_nleep, "rtol": None,
     "skip": _nleep_too_large, "floor": _floor_nleep,
     "floor_what": "PCA(0.8) (Z^T Z, eigh, projection) + ONE EM step of the 5C-component mixture"},
    {"metric": "GBC", "paper": "Pandy et al., CVPR 2022", "function": "transrate_jax.gbc",
     "ours": gbc, "naive": _naive_gbc, "rtol": 1e-2,
     "floor": _floor_gbc, "floor_what": "Z^T Z, top-64 eigh, projection, class sums of x and x^2"},
    {"metric": "LFC", "paper": "Deshpande et al., 2021", "function": "transrate_jax.lfc",
     "ours": lfc, "naive": _naive_lfc, "rtol": 1e-4,
     "floor": _floor_lfc, "floor_what": "Z^T Z (for its Frobenius norm), the class sums"},
    {"metric": "SFDA", "paper": "Shao et al., ECCV 2022", "function": "transrate_jax.sfda",
     "ours": sfda, "naive": _naive_sfda, "rtol": 1e-3,
     "floor": _floor_sfda,
     "floor_what": "2 x (class sums, residual Z^T Z, Cholesky, 2 trsm [d, C], [n, d] x [d, C])"},
    # Randomised PCA in the public code: agreement is only approximate.
    {"metric": "PARC", "paper": "Bolya et al., NeurIPS 2021", "function": "transrate_jax.parc",
     "ours": parc, "naive": _naive_parc, "rtol": 1e-2,
     "floor": _floor_parc,
     "floor_what": "Z^T Z, top-32 eigh, projection, n x n Gram of 32 columns (ranking not counted)"},
]
