"""Every bad input gets a named ValueError: no silent NaN, no raw TypeError or AttributeError.

Holes found by fuzzing: float32 features whose products overflow (|f| ~ 1e20) gave NaN from the
sharded, streaming and loss paths and from GBC; constant features gave NaN from SFDA; wrong
argument types reached TransRateStats, transrate_from_batches, linear_probe_accuracy and nleep
unchecked.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import transrate_jax as tj
from transrate_jax._src import validation

_RNG = np.random.default_rng(0)
_Y = np.arange(200) % 4
_HUGE = _RNG.normal(size=(200, 16)).astype(np.float32) * np.float32(1e20)  # finite in float32
_F = _RNG.normal(size=(40, 4)).astype(np.float32)
_YS = np.arange(40) % 2


# 1. float32 overflow: a ValueError (eager transrate rescues the same call in float64).


def test_transrate_eager_still_rescues_float32_overflow():
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # the overflow on the way is handled, not printed
    assert np.isfinite(float(tj.transrate(_HUGE, _Y)))


@pytest.mark.parametrize("score", [
    lambda f, y: tj.transrate_sharded(f, y),
    lambda f, y: tj.transrate_from_batches([(f[:100], y[:100]), (f[100:], y[100:])],
                                           progress=False),
    lambda f, y: tj.TransRateStats.init(16, num_classes=4).update(f, y).finalize(),
    lambda f, y: tj.transrate_loss(f, y, num_classes=4),
    lambda f, y: tj.transrate_loss(f, y, num_classes=4, gradient="autodiff"),
], ids=["sharded", "from_batches", "stats_finalize", "loss", "loss_autodiff"])
def test_float32_overflow_raises_instead_of_nan(score):
  with pytest.raises(ValueError, match="not finite .* although the inputs are finite"):
    score(_HUGE, _Y)


@pytest.mark.parametrize("score", [
    lambda f, y: tj.transrate_sharded(f, y),
    lambda f, y: tj.transrate_loss(f, y, num_classes=4),
], ids=["sharded", "loss"])
def test_float32_overflow_message_names_the_scale(score):
  with pytest.raises(ValueError, match=r"scale \(max\|f\| = .*\) overflows float32 products"):
    score(_HUGE, _Y)
  # Products just beyond float32 (max|f|^2 / eps): caught too, not only |f|^2 itself.
  with pytest.raises(ValueError, match="overflows float32"):
    score(_HUGE * np.float32(1e-2), _Y)


def test_loss_under_trace_is_not_checked():
  # Traced values have no values to check: the loss stays traceable.
  loss = jax.jit(lambda f: tj.transrate_loss(f, _Y, num_classes=4))(_HUGE / np.float32(1e20))
  assert np.isfinite(float(loss))


# 2. GBC and SFDA.


@pytest.mark.parametrize("gaussian", ["spherical", "diagonal"])
def test_gbc_float32_overflow_raises(gaussian):
  with pytest.raises(ValueError, match="GBC is not finite.*overflows float32"):
    tj.gbc(_HUGE, _Y, gaussian=gaussian)


@pytest.mark.parametrize("features", [
    np.ones((40, 4), np.float32), np.zeros((40, 4), np.float32), np.zeros((40, 4)),
    jnp.full((40, 4), 3.0, jnp.float32),
], ids=["ones", "zeros32", "zeros64", "jax_constant"])
def test_sfda_constant_features_raise(features):
  with pytest.raises(ValueError, match="SFDA is undefined for constant features"):
    tj.sfda(features, _YS)


@pytest.mark.parametrize("features", [
    np.eye(2, dtype=np.float32)[_YS], _YS[:, None].astype(np.float64), jnp.eye(2)[_YS] * 5.0,
], ids=["one_hot", "label_column", "jax_one_hot"])
def test_sfda_zero_within_class_scatter_raises(features):
  with pytest.raises(ValueError, match="within-class scatter is zero"):
    tj.sfda(features, _YS)


def test_sfda_float32_overflow_raises():
  with pytest.raises(ValueError, match="SFDA is not finite"):
    tj.sfda(_F * np.float32(1e38), _YS)


# 3. TransRateStats and transrate_from_batches: wrong argument types.

_STATS = tj.TransRateStats.init(4, num_classes=2)


@pytest.mark.parametrize("dtype", ["x", [1, 2], np.complex64])
def test_stats_init_bad_dtype(dtype):
  with pytest.raises(ValueError, match="dtype"):
    tj.TransRateStats.init(4, num_classes=2, dtype=dtype)


@pytest.mark.parametrize("fields", [
    (None,) * 5, ("a", "b", "c", "d", "e"),
    ([1, 1], [[0.0] * 4] * 2, [[[0.0] * 4] * 4] * 2, [0.0] * 4, 0),
    (np.zeros(2, np.int32), np.zeros((2, 4)), np.zeros((2, 3, 3)), np.zeros(4), np.int32(0)),
    (np.zeros(2), np.zeros((2, 4)), np.zeros((2, 4, 4)), np.zeros(4), np.int32(0)),
], ids=["none", "strings", "lists", "shapes", "float_counts"])
@pytest.mark.parametrize("call", [
    lambda s: s.finalize(), lambda s: s.update(_F, _YS), lambda s: _STATS.merge(s),
    lambda s: s.merge(_STATS),
], ids=["finalize", "update", "merge_other", "merge_self"])
def test_stats_with_bad_fields_raise(fields, call):
  with pytest.raises(ValueError, match="TransRateStats"):
    call(tj.TransRateStats(*fields))


@pytest.mark.parametrize("other", ["x", None, 3, (1, 2)])
def test_stats_merge_non_stats(other):
  with pytest.raises(ValueError, match="merge needs another TransRateStats"):
    _STATS.merge(other)


@pytest.mark.parametrize("mask", [np.ones(40), ["a"] * 40, np.array([None] * 40), np.ones(40, int)])
def test_stats_update_non_boolean_mask(mask):
  with pytest.raises(ValueError, match="mask must be a boolean array"):
    _STATS.update(_F, _YS, mask=mask)


@pytest.mark.parametrize("kwargs", [dict(eps="x"), dict(eps=None), dict(weighting=3),
                                    dict(preset=[])])
def test_stats_finalize_bad_options(kwargs):
  with pytest.raises(ValueError):
    _STATS.update(_F, _YS).finalize(**kwargs)


_PAIRS = [(_F[:20], _YS[:20]), (_F[20:], _YS[20:])]


@pytest.mark.parametrize("batches, match", [
    ("abc", "batches must be an iterable of"),
    (None, "batches must be an iterable of"),
    (3, "batches must be an iterable of"),
    ({"a": 1}, "batches must be an iterable of"),
    ({0: _PAIRS[0]}, "batches must be an iterable of"),
    (_F, "batches must be an iterable of"),
    (["ab", "cd"], "item 0 is str"),
    ((i for i in range(3)), "item 0 is int"),
    ((None for _ in range(2)), "item 0 is NoneType"),
    (((_F, _YS, _YS) for _ in range(2)), "item 0 is a tuple of 3 elements"),
    ([{"features": _F, "labels": _YS}], "item 0 is dict"),
    ([_F], "item 0 is ndarray"),
    (lambda x: _PAIRS, "callable that needs arguments"),
    (lambda: 3, "batches\\(\\) returned must be an iterable"),
    (lambda: [1, 2], "item 0 is int"),
], ids=["str", "none", "int", "dict", "dict_of_pairs", "array", "list_of_str", "gen_of_int",
        "gen_of_none", "gen_of_triples", "list_of_dicts", "list_of_arrays", "callable_args",
        "callable_int", "callable_list_of_int"])
def test_from_batches_bad_batches(batches, match):
  with pytest.raises(ValueError, match=match):
    tj.transrate_from_batches(batches, progress=False)


@pytest.mark.parametrize("batches", [None, "abc"])
def test_from_batches_bad_batches_official(batches):
  with pytest.raises(ValueError, match="batches must be an iterable of"):
    tj.transrate_from_batches(batches, preset="official", progress=False)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_classes="3"), "num_classes"), (dict(num_classes=3.0), "num_classes"),
    (dict(num_classes=0), "num_classes"), (dict(eps="x"), "eps"), (dict(eps=None), "eps"),
    (dict(dtype="x"), "dtype"), (dict(dtype=np.complex64), "complex"),
    (dict(process_local="x"), "process_local"), (dict(progress="yes"), "progress"),
])
def test_from_batches_bad_options(kwargs, match):
  with pytest.raises(ValueError, match=match):
    tj.transrate_from_batches(_PAIRS, **{"progress": False, **kwargs})


def test_from_batches_good_inputs_unchanged():
  want = float(tj.transrate(_F, _YS))
  for batches in (_PAIRS, [list(p) for p in _PAIRS], lambda: iter(_PAIRS), iter(_PAIRS)):
    got = float(tj.transrate_from_batches(batches, progress=False))
    np.testing.assert_allclose(got, want, rtol=1e-4)


# 4. linear_probe_accuracy.

_TRAIN, _TEST = (_F[:30], _YS[:30]), (_F[30:], _YS[30:])


@pytest.mark.parametrize("train_labels, test_labels, match", [
    (["a"] * 30, _TEST[1], "train_labels must be integer"),
    (_TRAIN[1], ["a"] * 10, "test_labels must be integer"),
    (None, _TEST[1], "train_labels must be a 1-D array"),
    (_TRAIN[1], None, "test_labels must be a 1-D array"),
    (_TRAIN[1] + 0.5, _TEST[1], "train_labels must be integer"),
    (_TRAIN[1] - 1, _TEST[1], "train_labels must be >= 0"),
])
def test_probe_bad_labels(train_labels, test_labels, match):
  with pytest.raises(ValueError, match=match):
    tj.linear_probe_accuracy(_TRAIN[0], train_labels, _TEST[0], test_labels, steps=5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(learning_rate=float("nan")), "learning_rate must be finite and > 0"),
    (dict(learning_rate=float("inf")), "learning_rate must be finite and > 0"),
    (dict(learning_rate=0.0), "learning_rate must be finite and > 0"),
    (dict(learning_rate=-1e-2), "learning_rate must be finite and > 0"),
    (dict(learning_rate="x"), "learning_rate must be a real number"),
    (dict(learning_rate=None), "learning_rate must be a real number"),
    (dict(learning_rate=True), "learning_rate must be a real number"),
    (dict(l2=float("nan")), "l2 must be finite and >= 0"),
    (dict(l2=-1.0), "l2 must be finite and >= 0"),
    (dict(l2="x"), "l2 must be a real number"),
    (dict(steps=0), "steps must be a positive"),
    (dict(steps=2.5), "steps must be a positive"),
    (dict(steps="3"), "steps must be a positive"),
    (dict(num_classes="2"), "num_classes"),
])
def test_probe_bad_hyper_parameters(kwargs, match):
  with pytest.raises(ValueError, match=match):
    tj.linear_probe_accuracy(*_TRAIN, *_TEST, **{"steps": 5, **kwargs})


def test_probe_good_inputs():
  acc = tj.linear_probe_accuracy(*_TRAIN, *_TEST, steps=5, l2=0.0)
  assert 0.0 <= acc <= 1.0


# 5. nleep's key (and its float options).

_FN = _RNG.normal(size=(40, 4)).astype(np.float32)
_YN = np.arange(40) % 2


@pytest.mark.parametrize("seed", [0, np.int64(0), np.uint32(0), jnp.asarray(0)])
def test_nleep_int_seed_is_a_key(seed):
  want = float(tj.nleep(_FN, _YN, key=jax.random.key(0), pca_dim=2))
  assert float(tj.nleep(_FN, _YN, key=seed, pca_dim=2)) == want


def test_nleep_legacy_prng_key_accepted():
  want = float(tj.nleep(_FN, _YN, key=jax.random.key(0), pca_dim=2))
  assert float(tj.nleep(_FN, _YN, key=jax.random.PRNGKey(0), pca_dim=2)) == want


@pytest.mark.parametrize("key, match", [
    ("0", "key must be a jax.random key"), (1.5, "key must be a jax.random key"),
    (True, "key must be a jax.random key"), ([0, 1], "key must be a jax.random key"),
    (np.arange(3), "key must be a jax.random key"),
    (np.zeros(3, np.uint32), "not a jax.random.PRNGKey"),
    (jax.random.split(jax.random.key(0), 2), "single jax.random key"),
    (2**70, "not a valid integer seed"),
])
def test_nleep_bad_key(key, match):
  with pytest.raises(ValueError, match=match):
    tj.nleep(_FN, _YN, key=key, pca_dim=2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(variance=None), "variance must be a real number"),
    (dict(variance=float("nan")), "variance must be finite"),
    (dict(variance=1.5), "variance must be finite and > 0 and <= 1"),
    (dict(tol=None), "tol must be a real number"), (dict(tol=float("nan")), "tol must be finite"),
    (dict(tol=-1.0), "tol must be finite and >= 0"),
    (dict(reg_covar=float("nan")), "reg_covar must be finite"),
    (dict(reg_covar=-1.0), "reg_covar must be finite and >= 0"),
    (dict(reg_covar="x"), "reg_covar must be a real number"),
])
def test_nleep_bad_float_options(kwargs, match):
  with pytest.raises(ValueError, match=match):
    tj.nleep(_FN, _YN, **kwargs)


# The shared checks themselves.


def test_check_finite_result_passes_finite_and_traced():
  assert validation.check_finite_result(1.0, metric="m") == 1.0
  out = jax.jit(lambda x: validation.check_finite_result(x * jnp.nan, metric="m"))(1.0)
  assert np.isnan(out)  # traced: no values to check
  with pytest.raises(ValueError, match="m is not finite"):
    validation.check_finite_result(jnp.asarray([1.0, jnp.inf]), metric="m")


@pytest.mark.parametrize("value", [True, "1", None, 1j, np.ones(2), float("nan"), -1.0, 0.0])
def test_check_real_scalar_refuses(value):
  with pytest.raises(ValueError, match="lr"):
    validation.check_real_scalar(value, "lr")
