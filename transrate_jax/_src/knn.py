"""Leave-one-out k-nearest-neighbour accuracy (k-NN) of the target labels from the features.

Sorkhei, Matsoukas, Fredin Haslum, Konuk and Smith, "k-NN as a Simple and Effective Estimator of
Transferability", TMLR 2025 (arXiv 2503.18528). Conventions (distances, leave-one-out, the vote)
follow flairNLP/transformer-ranker ``transformer_ranker/estimators/nearestneighbors.py``
(``NearestNeighbors.fit``); the differences are listed in :func:`knn_accuracy`.

The ``n x n`` distances are never held at once: query blocks of ``block_size`` rows are scored
against all ``n`` samples with one matmul each, and only the ``k`` best of each row are kept, so the
working memory is ``O(block_size * n + n * d)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from transrate_jax._src import numerics
from transrate_jax._src import peer_numerics
from transrate_jax._src import registry
from transrate_jax._src import validation

HIGHEST = numerics.HIGHEST

METRICS = ("cosine", "euclidean")


def _embed(x, metric):
  """Rows ``u`` [n, d] and column offsets ``b`` [n] with ``score_ij = u_i . u_j`` (cosine) or
  ``2 u_i . u_j - b_j`` (euclidean): for each query row ``i`` a larger score is a nearer ``j``.

  Cosine: each row is divided by a power of two near its largest entry (exact; no overflow or
  underflow of the squares for any finite scale), then by its Euclidean norm; a zero row stays
  zero (cosine similarity 0 to every row). Euclidean: the features are centred with a shift
  (:func:`peer_numerics.centre`) and divided by a power of two near their largest entry (exact);
  ``|u_i - u_j|^2 = |u_i|^2 - (2 u_i . u_j - |u_j|^2)`` and ``|u_i|^2`` is constant along row ``i``,
  so it is left out (one rounding fewer).
  """
  if metric == "cosine":
    s = peer_numerics.pow2_above(jnp.max(jnp.abs(x), axis=1, keepdims=True))
    u = x / s
    norm = jnp.sqrt(jnp.sum(u * u, axis=1, keepdims=True))
    u = u / jnp.where(norm > 0, norm, jnp.ones((), x.dtype))
    return u, None
  u, _ = peer_numerics.normalise(peer_numerics.centre(x))
  return u, jnp.sum(u * u, axis=1)


def _vote(neighbour_labels):
  """The most frequent label of each row of ``neighbour_labels`` [b, k]; ties: the smallest label.

  Sorted labels form runs; ``run[j]`` counts ``s[j]`` among ``s[:j + 1]``, and the first position
  where it reaches its row maximum lies in the run of the smallest most frequent label. O(b k log k)
  work, independent of the number of classes.
  """
  k = neighbour_labels.shape[1]
  s = jnp.sort(neighbour_labels, axis=1)
  pos = jnp.arange(k, dtype=jnp.int32)
  starts = jnp.concatenate(
      [jnp.ones_like(s[:, :1], dtype=bool), s[:, 1:] != s[:, :-1]], axis=1)
  start = jax.lax.cummax(jnp.where(starts, pos[None, :], 0), axis=1)
  best = jnp.argmax(pos[None, :] - start, axis=1)
  return jnp.take_along_axis(s, best[:, None], axis=1)[:, 0]


@functools.partial(jax.jit, static_argnames=("k", "metric", "block_size"))
def _knn_predict_kernel(x, y, *, k, metric, block_size):
  n, d = x.shape
  u, sq = _embed(x, metric)
  b = min(block_size, n)
  blocks = -(-n // b)
  queries = jnp.pad(u, ((0, blocks * b - n), (0, 0))).reshape(blocks, b, d)
  rows = jnp.arange(blocks * b, dtype=jnp.int32).reshape(blocks, b)  # padded rows: >= n
  cols = jnp.arange(n, dtype=jnp.int32)

  def one_block(args):
    q, r = args
    score = jnp.einsum("bd,nd->bn", q, u, precision=HIGHEST)  # [b, n]
    if sq is not None:
      score = 2.0 * score - sq[None, :]
    score = jnp.where(r[:, None] == cols[None, :], -jnp.inf, score)  # leave one out
    _, idx = jax.lax.top_k(score, k)  # equal scores: the lower index first
    return _vote(y[idx])

  return jax.lax.map(one_block, (queries, rows)).reshape(-1)[:n]


def _check(features, labels, k, metric, block_size, num_classes):
  if not isinstance(metric, str) or metric not in METRICS:
    raise ValueError(f"metric must be one of {METRICS}; got {metric!r}.")
  k = validation.check_positive_int(k, "k")
  block_size = validation.check_positive_int(block_size, "block_size")
  x = validation.check_features(features)
  n = x.shape[0]
  if k >= n:
    raise ValueError(f"k must be smaller than the number of samples n={n} (leave-one-out "
                     f"leaves n - 1 candidates); got k={k}.")
  y, c = validation.check_labels(labels, n, num_classes=num_classes)
  validation.check_class_structure(labels, c, metric="k-NN accuracy")
  return x, y, k, min(block_size, n)  # one program for every block_size >= n


def knn_predictions(features, labels, *, k: int = 5, metric: str = "cosine",
                    block_size: int = 1024, num_classes: int | None = None) -> jax.Array:
  """The leave-one-out k-NN prediction of each sample's label (see :func:`knn_accuracy`).

  Args:
    features, labels, k, metric, block_size, num_classes: as in :func:`knn_accuracy`.

  Returns:
    [n] int32: the majority label among the ``k`` nearest other samples of each sample.

  Raises:
    ValueError: as :func:`knn_accuracy`.
  """
  x, y, k, block_size = _check(features, labels, k, metric, block_size, num_classes)
  return _knn_predict_kernel(x, y, k=k, metric=metric, block_size=block_size)


def knn_accuracy(features, labels, *, k: int = 5, metric: str = "cosine", block_size: int = 1024,
                 num_classes: int | None = None) -> jax.Array:
  """Leave-one-out k-nearest-neighbour accuracy of the labels from the features.

  Higher is better (in ``[0, 1]``). Each sample ``i`` is classified by a majority vote of the
  labels of its ``k`` nearest *other* samples, and the score is the fraction classified right:

      N_k(i) = the k indices j != i of smallest dist(x_i, x_j),
      yhat_i = argmax_c #{j in N_k(i) : y_j = c},
      kNN = (1 / n) #{i : yhat_i = y_i},

  with ``dist(x_i, x_j) = 1 - x_i . x_j / (|x_i| |x_j|)`` (``"cosine"``) or ``|x_i - x_j|``
  (``"euclidean"``), as transformer-ranker's ``NearestNeighbors.fit``. Its conventions, kept:

  * leave-one-out: only the sample itself is excluded (its own distance is set to +inf); an exact
    duplicate of ``x_i`` elsewhere in the data is a neighbour at distance 0;
  * vote ties (two labels with the same count among the ``k``): the smallest label wins
    (``torch.mode`` returns the smallest of the most frequent values); the neighbours' distances
    do not weigh in;
  * a zero row (cosine): its cosine similarity to every row is 0, distance 1 (torch's
    ``cosine_similarity`` clamps the norms at 1e-8); its neighbours are then all tied.

  Where the reference leaves it open or differs:

  * distance ties (equal computed scores at the ``k``-th place): the lower sample index is
    taken (``jax.lax.top_k`` puts equal values lower index first); ``torch.topk`` guarantees no
    order for equal values (on CPU it may skip a lower index). Distances equal in exact
    arithmetic tie in the computation when the arithmetic is exact (duplicate rows, parallel
    rows for cosine, small dyadic coordinates); otherwise round-off decides;
  * the score is plain accuracy for every number of classes. transformer-ranker returns
    torchmetrics' micro F1, which equals the accuracy for three or more classes, but for exactly
    two classes present it switches to ``task="binary"``, where the score is the F1 of class 1,
    not the accuracy (:func:`knn_predictions` gives the predictions to compute it from);
  * the defaults here are ``k = 5``, cosine (transformer-ranker's are ``k = 3``, euclidean).

  Computation (exact, blockwise): query blocks of ``block_size`` rows are scored against all
  ``n`` samples with one ``Precision.HIGHEST`` matmul ([block, n] per step, padded rows masked),
  the diagonal is masked and ``jax.lax.top_k`` keeps the ``k`` best: memory
  ``O(block_size * n + n * d)``, never ``n x n``. Cosine ranks by ``u_i . u_j`` with unit rows
  ``u``; euclidean ranks by ``2 u_i . u_j - |u_j|^2`` (``= |u_i|^2 - |u_i - u_j|^2``) with ``u``
  the features centred (with a shift) and divided by a power of two: the norm expansion then
  loses precision only relative to the spread of the data, not to a common offset.

  Invariances: the order of the samples (given no distance ties), a renaming of the classes (given
  no vote ties), zero feature columns; cosine: any positive scaling of each row; euclidean: a
  common offset, a global scaling and any rotation. Near-ties in distance may be ordered
  differently in float32 and float64 (the float32 distances of near points carry about
  ``2^-24`` of the data's squared spread of round-off).

  Args:
    features: [n, d] float features of the target data from the pre-trained model.
    labels: [n] int class indices in ``0..C-1``.
    k: number of neighbours, ``1 <= k < n`` (static).
    metric: ``"cosine"`` (default) or ``"euclidean"``.
    block_size: query rows per distance block (static); the result does not depend on it.
    num_classes: static ``C``; needed under ``jit``/``vmap``, else ``max(labels) + 1``.

  Returns:
    Scalar accuracy ``(correct count) / n`` in the features' float dtype.

  Raises:
    ValueError: ``k`` not a positive int or ``k >= n``, ``block_size`` not a positive int, an
      unknown ``metric``, NaN or inf features, bad labels, fewer than two classes present
      (the last two value checks only for concrete inputs).

  Example:
    >>> score = knn_accuracy(features, labels, k=5)  # doctest: +SKIP

  Reference: Sorkhei et al., "k-NN as a Simple and Effective Estimator of Transferability",
  TMLR 2025 (arXiv 2503.18528).
  """
  features = registry.no_derivative(features, "knn_accuracy")
  x, y, k, block_size = _check(features, labels, k, metric, block_size, num_classes)
  pred = _knn_predict_kernel(x, y, k=k, metric=metric, block_size=block_size)
  correct = jnp.sum(pred == y, dtype=jnp.int32)
  return correct.astype(x.dtype) / jnp.asarray(x.shape[0], x.dtype)


def _bytes_per_item(n: int, width: int, itemsize: int) -> int:
  """Working memory of one input: the embedded copy and its padded queries ([n, d] each) and
  a few [block, n] score arrays at the default block of 1024 rows."""
  return itemsize * (3 * n * width + 3 * min(1024, n) * n)


registry.register_metric(
    "knn_accuracy", knn_accuracy, vmappable=True, zero_pad_exact=True,
    bytes_per_item=_bytes_per_item,
    description="k-NN: leave-one-out k-nearest-neighbour accuracy of the labels (cosine or "
                "euclidean; Sorkhei et al., TMLR 2025)")
