"""Float64 NumPy oracles and seeded inputs for LEEP, NCE, N-LEEP, GBC, LFC, SFDA and PARC.

Each oracle follows the published formula step by step (explicit loops, ``n x n`` kernels,
scipy's generalised eigensolver, ``scipy.stats.spearmanr``), independently of the JAX code.
The ``make_*`` functions build the seeded inputs that ``tests/data/peers_b_reference.json``
was produced from (see ``tests/data/README.md``): do not change them without regenerating it.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.stats


# ---------------------------------------------------------------------------- seeded inputs


def make_features(seed, counts, d, *, sep=2.0, rank=None, noise=1.0):
  """Class-structured features [n, d] float64 and shuffled labels [n] int64.

  ``rank`` (optional) confines the signal to a random ``rank``-dimensional subspace, with
  isotropic noise of standard deviation ``noise`` (a clear spectral gap for PCA).
  """
  rng = np.random.default_rng(seed)
  counts = np.asarray(counts)
  labels = np.repeat(np.arange(len(counts)), counts)
  n = labels.shape[0]
  r = d if rank is None else rank
  basis = np.linalg.qr(rng.normal(size=(d, r)))[0] if rank is not None else np.eye(d)
  means = sep * rng.normal(size=(len(counts), r))
  scales = 1.0 + 3.0 * rng.random(r)
  signal = (means[labels] + rng.normal(size=(n, r)) * scales) @ basis.T
  features = 3.0 + signal + noise * (rng.normal(size=(n, d)) if rank is not None else 0.0)
  perm = rng.permutation(n)
  return np.ascontiguousarray(features[perm]), labels[perm].astype(np.int64)


def make_probs(seed, n, num_source, num_classes, *, temperature=2.0):
  """Source probabilities [n, Cs] (softmax of logits correlated with the labels), labels [n]."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, size=n)
  mapping = rng.normal(size=(num_classes, num_source))
  logits = temperature * (mapping[labels] + rng.normal(size=(n, num_source)))
  logits -= logits.max(axis=1, keepdims=True)
  probs = np.exp(logits)
  return probs / probs.sum(axis=1, keepdims=True), labels.astype(np.int64)


def make_hard(seed, n, num_source, num_classes):
  """Hard source labels [n] (noisy function of the target labels) and target labels [n]."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, size=n)
  mapping = rng.integers(0, num_source, size=num_classes)
  source = np.where(rng.random(n) < 0.6, mapping[labels], rng.integers(0, num_source, size=n))
  return source.astype(np.int64), labels.astype(np.int64)


FEATURE_CASES = {
    # name: (seed, counts, d, kwargs)
    "small": (0, [30, 25, 35, 30], 10, {}),
    "imbalanced": (1, [6, 40, 70, 15, 4], 16, {"sep": 1.5}),
    "pca": (2, [40, 50, 45, 35], 80, {"rank": 24, "noise": 0.05}),
    # Signal of rank exactly 32 with a wide spectral gap: the reference's randomised PCA finds
    # the same 32 components as the exact one.
    "parc_pca": (7, [50, 60, 40, 50], 96, {"rank": 32, "noise": 0.01}),
}

PROB_CASES = {"probs": (3, 150, 12, 5), "probs_many": (4, 300, 40, 8)}
HARD_CASES = {"hard": (5, 200, 9, 4), "hard_sparse": (6, 60, 30, 6)}


def feature_case(name):
  seed, counts, d, kwargs = FEATURE_CASES[name]
  return make_features(seed, counts, d, **kwargs)


# ---------------------------------------------------------------------------- oracles


def leep(theta, labels):
  """LEEP from the definition, float64."""
  theta = np.asarray(theta, np.float64)
  n, cs = theta.shape
  c = int(labels.max()) + 1
  joint = np.zeros((c, cs))
  for i in range(n):
    joint[labels[i]] += theta[i] / n
  pz = joint.sum(axis=0, keepdims=True)
  cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)  # P(y | z); unused if P(z)=0
  return float(np.mean([np.log(np.dot(theta[i], cond[labels[i]])) for i in range(n)]))


def nce(source, labels):
  """NCE = sum P(y, z) log P(y | z), float64, 0 log 0 = 0."""
  n = len(labels)
  joint = {}
  for z, y in zip(source, labels):
    joint[(int(y), int(z))] = joint.get((int(y), int(z)), 0.0) + 1.0 / n
  pz = {}
  for (y, z), p in joint.items():
    pz[z] = pz.get(z, 0.0) + p
  return float(sum(p * np.log(p / pz[z]) for (y, z), p in joint.items()))


def pca_full(x, n_components):
  """scikit-learn's exact PCA (``svd_solver='full'``), fit_transform."""
  from sklearn.decomposition import PCA
  return PCA(n_components=n_components, svd_solver="full").fit_transform(np.asarray(x, np.float64))


def gmm_params_from_resp(x, resp, reg_covar=1e-6):
  """Weights, means, precisions of a full-covariance mixture from responsibilities (M-step)."""
  nk = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps
  means = resp.T @ x / nk[:, None]
  precisions = []
  for k in range(resp.shape[1]):
    diff = x - means[k]
    cov = (resp[:, k, None] * diff).T @ diff / nk[k] + reg_covar * np.eye(x.shape[1])
    precisions.append(np.linalg.inv(cov))
  return nk / nk.sum(), means, np.stack(precisions)


def sklearn_gmm(x, resp0, *, max_iter=100, tol=1e-3, reg_covar=1e-6):
  """scikit-learn's GaussianMixture started from the parameters that ``resp0`` gives."""
  from sklearn.mixture import GaussianMixture
  w, m, p = gmm_params_from_resp(x, resp0, reg_covar)
  gmm = GaussianMixture(n_components=resp0.shape[1], covariance_type="full", tol=tol,
                        reg_covar=reg_covar, max_iter=max_iter, weights_init=w, means_init=m,
                        precisions_init=p, random_state=0)
  gmm.fit(x)
  return gmm


def nleep(x, labels, resp0, *, variance=0.8, max_iter=100, tol=1e-3, reg_covar=1e-6):
  """N-LEEP with scikit-learn's PCA(variance) and GaussianMixture started from ``resp0``."""
  xp = pca_full(x, variance)
  gmm = sklearn_gmm(xp, resp0, max_iter=max_iter, tol=tol, reg_covar=reg_covar)
  return leep(gmm.predict_proba(xp), labels)


def gbc(x, labels, *, gaussian="spherical", pca_dim=64):
  """GBC from the formula, looping over class pairs (stable_transfer conventions)."""
  x = np.asarray(x, np.float64)
  if x.shape[1] > pca_dim:
    x = pca_full(x, pca_dim)
  classes = np.unique(labels)
  stats = {}
  for c in classes:
    xc = x[labels == c]
    var = np.maximum(xc.var(axis=0), 1e-4)
    stats[c] = (xc.mean(axis=0), np.array([var.mean()]) if gaussian == "spherical" else var)
  total = 0.0
  for c1 in classes:
    for c2 in classes:
      if c1 == c2:
        continue
      (m1, s1), (m2, s2) = stats[c1], stats[c2]
      s = (s1 + s2) / 2
      db = np.sum((m1 - m2) ** 2 / s) / 8 + 0.5 * (
          np.sum(np.log(s)) - 0.5 * np.sum(np.log(s1)) - 0.5 * np.sum(np.log(s2)))
      total += np.exp(-db)
  return float(-total)


def lfc(x, labels):
  """Centred kernel alignment of X X^T and the +-1 label kernel, with n x n matrices."""
  x = np.asarray(x, np.float64)
  n = x.shape[0]
  h = np.eye(n) - 1.0 / n
  k = h @ (x @ x.T) @ h
  lab = np.where(labels[:, None] == labels[None, :], 1.0, -1.0)
  lab = h @ lab @ h
  return float(np.sum(k * lab) / (np.linalg.norm(k) * np.linalg.norm(lab)))


def _fisher_fit_predict(x, labels, shrinkage):
  classes = np.unique(labels)
  n, d = x.shape
  priors = np.array([np.mean(labels == c) for c in classes])
  means = np.stack([x[labels == c].mean(axis=0) for c in classes])
  sw = sum(p * np.cov(x[labels == c].T, bias=True) for p, c in zip(priors, classes))
  sw = np.atleast_2d(sw)
  if shrinkage is None:
    v = sw.sum(axis=1)  # three double steps of power iteration, as the reference
    for _ in range(3):
      u = sw @ v
      u /= np.linalg.norm(u)
      v = sw @ u
      v /= np.linalg.norm(v)
    shrinkage = max(np.exp(-5 * (v @ sw @ u)), 1e-10)
  st = (1 - shrinkage) * np.cov(x.T, bias=True) + shrinkage * np.trace(np.cov(x.T, bias=True)) / d * np.eye(d)
  sw_s = (1 - shrinkage) * sw + shrinkage * np.trace(sw) / d * np.eye(d)
  evals, evecs = scipy.linalg.eigh(st - sw_s, sw_s)
  evecs = evecs[:, np.argsort(evals)[::-1]]
  coef = means @ evecs @ evecs.T
  intercept = -0.5 * np.diag(means @ coef.T) + np.log(priors)
  scores = x @ coef.T + intercept
  scores -= scores.max(axis=1, keepdims=True)
  prob = np.exp(scores)
  return prob / prob.sum(axis=1, keepdims=True), shrinkage, means


def sfda(x, labels):
  """SFDA score following the published steps (labels must be 0..C-1, all present)."""
  x = np.array(x, np.float64)
  n = len(labels)
  c = len(np.unique(labels))
  prob, shrinkage, means = _fisher_fit_predict(x, labels, None)
  prob = np.exp(prob) / np.exp(prob).sum(axis=1, keepdims=True)
  outer = np.stack([(means.sum(axis=0) - means[k]) / (c - 1) for k in range(c)])
  for i in range(n):
    p = prob[i, labels[i]]
    x[i] = p * x[i] + (1 - p) * outer[labels[i]]
  prob, _, _ = _fisher_fit_predict(x, labels, shrinkage)
  return float(np.mean(prob[np.arange(n), labels]))


def parc(x, labels, *, pca_dim=32):
  """PARC with exact PCA, StandardScaler, corrcoef RDMs and scipy's Spearman."""
  from sklearn.preprocessing import StandardScaler
  x = np.asarray(x, np.float64)
  k = min(pca_dim, x.shape[0], x.shape[1])
  z = StandardScaler().fit_transform(pca_full(x, k))
  c = int(labels.max()) + 1
  rdm1 = 1 - np.corrcoef(z)
  # 1 - corrcoef(one_hot rows), in exact arithmetic: 0 within a class, C/(C-1) across classes.
  rdm2 = np.where(labels[:, None] == labels[None, :], 0.0, c / (c - 1))
  iu = np.triu_indices(x.shape[0], 1)
  return float(scipy.stats.spearmanr(rdm1[iu], rdm2[iu])[0] * 100)
