"""Precision audit: every float32 program multiplies at HIGHEST and holds no float64.

On a GPU or TPU a float32 ``dot_general`` (or ``conv_general_dilated``) whose precision is not
``HIGHEST`` runs in TF32 or bf16 passes and loses about half of its digits, and a float64
operation in a float32 program is slow (or emulated) there and silently changes dtypes. The
library's rule (docs/numerics.md): every product in a float32 program is at
``jax.lax.Precision.HIGHEST`` (``numerics.HIGHEST``) and no value in it is float64.

Each public entry point is traced with float32 inputs by ``jax.make_jaxpr`` on the accelerator
branches (:func:`backend.accelerator_branches`: the programs a GPU runs, no ``pure_callback``),
and every equation of the program, sub-programs included (``jit``, ``custom_jvp_call``,
``custom_vjp_call``, ``custom_vmap_call``, ``scan``, ``while``, ``cond``, ``shard_map``: any
parameter that is a ``Jaxpr`` or ``ClosedJaxpr``, or a tuple, list or dict of them), is checked:

* a ``dot_general`` / ``conv_general_dilated`` with a float32 operand must have ``precision``
  HIGHEST for both operands;
* no equation may produce a float64 (or complex128) value, nor read a strongly typed one
  (constants and literals included). A weakly typed float64 scalar is a Python number: JAX gives
  it the dtype of the array it meets, so it may be read (converted, or passed into a call) but
  anything it produces must not be float64. Integers of 64 bits (indices) are allowed;
* no ``pure_callback`` is left: on the accelerator branches its host code is not a program the
  audit (or a GPU) sees.

``tests/conftest.py`` enables ``jax_enable_x64`` for the session, so a ``np.float64`` constant
or an array built with JAX's default float dtype in library code shows up here as float64.

A failure names the entry point, the primitive and the source line (``file:line (function)``),
and the name stack (e.g. the einsum's spec) where it has one.
"""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src import source_info_util
from jax.extend import core as jcore

import transrate_jax as tj
from transrate_jax._src import backend
from transrate_jax._src import streaming

HIGHEST = jax.lax.Precision.HIGHEST
_WIDE = (np.dtype(np.float64), np.dtype(np.complex128))
_PRODUCTS = ("dot_general", "conv_general_dilated")
_CALLBACKS = ("pure_callback",)

N, D, C = 48, 12, 3  # n > d and classes of 16 > d rows: covariance slots as well as Gram blocks
SOURCE_CLASSES = 5
# Wider features: the traced-label layout of TransRate that masks one n x n Gram matrix (the
# shape above takes per-class blocks), and n < d (every term on the Gram side).
SHAPES = ((N, D), (N, 30), (24, 40))

# Options a metric needs to be traced with traced features (all registered options).
_TRACE_OPTIONS = {
    # NLEEP picks its PCA width from the explained variance, which needs concrete values.
    "nleep": {"pca_dim": 8},
    # NCE reads Cs from concrete source labels; traced ones need it given.
    "nce": {"num_source_classes": SOURCE_CLASSES},
}


# ---------------------------------------------------------------------------------------------
# The audit.


def _dtype(var):
  return getattr(getattr(var, "aval", None), "dtype", None)


def _weak(var) -> bool:
  return bool(getattr(getattr(var, "aval", None), "weak_type", False))


def sub_jaxprs(value):
  """Every ``Jaxpr`` in an equation parameter: a (Closed)Jaxpr, or a tuple/list/dict of them."""
  if isinstance(value, jcore.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jcore.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from sub_jaxprs(v)
  elif isinstance(value, dict):
    for v in value.values():
      yield from sub_jaxprs(v)


def _is_highest(precision) -> bool:
  """Whether a ``dot_general``'s ``precision`` (None, a Precision, or a pair) is HIGHEST for both
  operands."""
  if precision is None:
    return False
  if isinstance(precision, (tuple, list)):
    return len(precision) == 2 and all(p == HIGHEST for p in precision)
  return precision == HIGHEST


def _where(eqn) -> str:
  where = source_info_util.summarize(eqn.source_info) or "<no user frame>"
  stack = str(eqn.source_info.name_stack)
  return f"{where} [{stack}]" if stack else where


def equations(closed):
  """``(eqn, path)`` for every equation of ``closed`` and of every sub-jaxpr, depth first."""
  def visit(jaxpr, path):
    for eqn in jaxpr.eqns:
      yield eqn, path
      for key, value in eqn.params.items():
        for sub in sub_jaxprs(value):
          yield from visit(sub, f"{path}{eqn.primitive.name}.{key}/")
  yield from visit(closed.jaxpr if isinstance(closed, jcore.ClosedJaxpr) else closed, "")


def _constvars(closed):
  def visit(jaxpr):
    yield from jaxpr.constvars
    for eqn in jaxpr.eqns:
      for value in eqn.params.values():
        for sub in sub_jaxprs(value):
          yield from visit(sub)
  yield from visit(closed.jaxpr if isinstance(closed, jcore.ClosedJaxpr) else closed)


def audit(closed, entry: str, *, float64: bool = True, callbacks: bool = True) -> list:
  """The violations of the float32 rules in ``closed`` (a ClosedJaxpr), one line each.

  Args:
    closed: the program, e.g. ``jax.make_jaxpr(fn)(*args)``.
    entry: the entry point's name, for the messages.
    float64: check for float64 values (off for a program whose float dtype is JAX's default by
      contract, such as NCE's of integer labels).
    callbacks: report ``pure_callback`` (on the accelerator branches there must be none).

  Returns:
    Sorted, de-duplicated messages ``"entry: primitive: problem at file:line (fn) [name stack]"``.
  """
  found = collections.Counter()
  if float64:
    for var in _constvars(closed):
      if _dtype(var) in _WIDE and not _weak(var):
        found[f"{entry}: constant {var.aval.str_short()}: a float64 constant in a float32 "
              "program"] += 1
  for eqn, _ in equations(closed):
    name = eqn.primitive.name
    if name in _PRODUCTS:
      operands = [_dtype(v) for v in eqn.invars[:2]]
      precision = eqn.params.get("precision")
      if np.dtype(np.float32) in operands and not _is_highest(precision):
        found[f"{entry}: {name}: float32 product at precision={precision} (not HIGHEST) at "
              f"{_where(eqn)}"] += 1
    if callbacks and name in _CALLBACKS:
      found[f"{entry}: {name}: a host callback on the accelerator branches at "
            f"{_where(eqn)}"] += 1
    if float64:
      wide = [v for v in eqn.invars if _dtype(v) in _WIDE and not _weak(v)]
      wide += [v for v in eqn.outvars if _dtype(v) in _WIDE]
      if wide:
        avals = ", ".join(sorted({v.aval.str_short() for v in wide}))
        found[f"{entry}: {name}: float64 value(s) {avals} at {_where(eqn)}"] += 1
  return sorted(f"{msg} (x{k})" if k > 1 else msg for msg, k in found.items())


def assert_clean(programs, **kwargs):
  """Audits ``[(entry, ClosedJaxpr)]`` and fails with every violation, one per line."""
  problems = []
  for entry, closed in programs:
    problems += audit(closed, entry, **kwargs)
  assert not problems, "float32 precision audit:\n  " + "\n  ".join(problems)


def _has(closed, primitive: str) -> bool:
  return any(eqn.primitive.name == primitive for eqn, _ in equations(closed))


# ---------------------------------------------------------------------------------------------
# Inputs and the accelerator branches.


@pytest.fixture(scope="module", autouse=True)
def _accelerator_branches():
  with backend.accelerator_branches():
    yield


def _data(n=N, d=D, seed=0):
  rng = np.random.default_rng(seed)
  y = (np.arange(n) % C).astype(np.int32)
  f = (rng.normal(size=(n, d)) + 3.0 * np.eye(d)[y % d]).astype(np.float32)
  probs = rng.random((n, SOURCE_CLASSES)).astype(np.float32) + 0.1
  probs /= probs.sum(axis=1, keepdims=True)
  source = rng.integers(0, SOURCE_CLASSES, n).astype(np.int32)
  return f, y, probs, source


def _input(metric, n=N, d=D):
  f, _, probs, source = _data(n, d)
  return {"features": f, "source_probs": probs, "source_labels": source}[metric.consumes]


# ---------------------------------------------------------------------------------------------
# The audit catches what it is meant to catch.


def test_audit_reports_a_default_precision_dot():
  a = np.ones((4, 4), np.float32)
  problems = audit(jax.make_jaxpr(lambda a: jnp.dot(a, a))(a), "planted")
  assert len(problems) == 1, problems
  assert "planted: dot_general" in problems[0] and "not HIGHEST" in problems[0]
  assert "test_precision_audit.py" in problems[0]  # the source line of the planted product
  assert not audit(jax.make_jaxpr(lambda a: jnp.dot(a, a, precision=HIGHEST))(a), "ok")
  # HIGHEST for one operand only is not enough.
  default = jax.lax.Precision.DEFAULT
  half = jax.make_jaxpr(lambda a: jax.lax.dot(a, a, precision=(HIGHEST, default)))(a)
  assert audit(half, "half")
  # A float64 product is not a float32 one (the float64 rule reports the program instead).
  assert not audit(jax.make_jaxpr(lambda a: jnp.dot(a, a))(a.astype(np.float64)), "f64",
                   float64=False)


def test_audit_finds_a_default_precision_dot_in_every_kind_of_sub_program():
  a = np.ones((4, 4), np.float32)

  @jax.custom_jvp
  def f(x):
    return jnp.sum(x)

  @f.defjvp
  def f_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return f(x), jnp.sum(jnp.dot(x, t))  # only in the JVP rule: seen by tracing jax.jvp

  def nested(x):
    def body(carry, row):
      return carry + jnp.dot(row, x), None
    scanned = jax.lax.scan(body, jnp.zeros(4, x.dtype), x)[0]
    branch = jax.lax.cond(x[0, 0] > 0, lambda: jnp.einsum("ij,jk->ik", x, x), lambda: x)
    return jax.jit(lambda: scanned.sum() + branch.sum())() + f(x)

  problems = audit(jax.make_jaxpr(nested)(a), "nested")
  assert len(problems) == 2 and all("dot_general" in p for p in problems), problems
  jvp = audit(jax.make_jaxpr(lambda x: jax.jvp(f, (x,), (x,)))(a), "jvp")
  assert len(jvp) == 1 and "dot_general" in jvp[0], jvp


def test_audit_reports_float64_in_a_float32_program():
  a = np.ones((4, 4), np.float32)
  # A float64 constant mixed in promotes the product to float64.
  problems = audit(jax.make_jaxpr(lambda a: a * np.float64(2.0))(a), "const")
  assert problems and all("float64" in p for p in problems), problems
  assert any("test_precision_audit.py" in p for p in problems), problems
  # A float64 array closed over, inside a jitted function.
  table = np.linspace(0.0, 1.0, 4)
  problems = audit(jax.make_jaxpr(jax.jit(lambda a: a @ table))(a), "closure")
  assert any("constant float64[4]" in p for p in problems), problems
  # Python scalars are weakly typed: they take the array's dtype and pass.
  assert not audit(jax.make_jaxpr(lambda a: jnp.where(a > 0, a * 2.0, 0.5))(a), "weak")
  # 64-bit integers (indices) are allowed.
  assert not audit(jax.make_jaxpr(lambda a: a[jnp.arange(2, dtype=jnp.int64)])(a), "int64")


def test_audit_reports_a_host_callback():
  a = np.ones((4,), np.float32)
  spec = jax.ShapeDtypeStruct((4,), np.float32)
  problems = audit(jax.make_jaxpr(lambda a: jax.pure_callback(np.negative, spec, a))(a), "cb")
  assert len(problems) == 1 and "pure_callback" in problems[0], problems


# ---------------------------------------------------------------------------------------------
# Every registered metric.


@pytest.mark.parametrize("name", tj.registered_metrics())
def test_registered_metric_programs(name):
  """Each metric traced over its input with concrete labels, under ``jit`` with traced labels,
  ``vmap``-ped over a stack (when vmappable), and, where its program has a ``custom_jvp`` rule,
  forward-differentiated."""
  metric = tj.get_metric(name)
  options = _TRACE_OPTIONS.get(name, {})
  # NCE reads integer labels only; its result is in JAX's default float dtype by contract
  # (float64 under x64), so only the precision rule applies to it.
  float64 = metric.consumes != "source_labels"
  programs = []
  for n, d in SHAPES[:2] if metric.consumes == "features" else SHAPES[:1]:
    x = _input(metric, n, d)
    labels = (np.arange(n) % C).astype(np.int32)
    fn = lambda x, labels=labels: metric.fn(x, labels, num_classes=C, **options)
    primal = jax.make_jaxpr(fn)(x)
    programs.append((f"{name}[{n}x{d}]", primal))
    traced = jax.jit(lambda x, labels: metric.fn(x, labels, num_classes=C, **options))
    programs.append((f"{name}[{n}x{d}, traced labels]", jax.make_jaxpr(traced)(x, labels)))
    if metric.consumes == "features" and metric.vmappable:  # batching rules (custom_vmap)
      programs.append((f"vmap({name})[{n}x{d}]", jax.make_jaxpr(jax.vmap(fn))(
          np.stack([x, 2.0 * x]))))
    if float64 and _has(primal, "custom_jvp_call"):
      try:
        jvp = jax.make_jaxpr(lambda x: jax.jvp(fn, (x,), (jnp.ones_like(x),)))(x)
      except ValueError as e:  # a metric registered as not differentiable (on every backend)
        assert not metric.differentiable and "not differentiable" in str(e), e
      else:
        programs.append((f"jvp({name})[{n}x{d}]", jvp))
  assert_clean(programs, float64=float64)


# ---------------------------------------------------------------------------------------------
# TransRate, the loss, streaming, sharding.


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_transrate_programs(shape):
  """``transrate`` eagerly traced (concrete labels), under ``jit`` with traced labels and a static
  ``num_classes`` (every weighting and preset), with a vector ``eps``, ``grad`` and ``vmap``."""
  n, d = shape
  f, y, _, _ = _data(n, d)
  eps = np.asarray([1e-4, 1e-3, 1e-2], np.float32)
  programs = [
      ("transrate", jax.make_jaxpr(lambda x: tj.transrate(x, y))(f)),
      ("transrate(eps=[E])", jax.make_jaxpr(lambda x: tj.transrate(x, y, eps=eps))(f)),
      ("grad(transrate)", jax.make_jaxpr(jax.grad(lambda x: tj.transrate(x, y)))(f)),
      ("coding_rate", jax.make_jaxpr(lambda x: tj.coding_rate(x))(f)),
      ("coding_rate(eps=[E])", jax.make_jaxpr(lambda x: tj.coding_rate(x, eps=eps))(f)),
      ("vmap(transrate)", jax.make_jaxpr(jax.vmap(lambda x: tj.transrate(x, y)))(
          np.stack([f, 2.0 * f]))),
  ]
  for kw in ({}, {"weighting": "uniform"}, {"preset": "official"}, {"eps": eps}):
    fn = jax.jit(lambda x, labels, kw=kw: tj.transrate(x, labels, num_classes=C, **kw))
    label = ", ".join(f"{k}={'[E]' if k == 'eps' else v}" for k, v in kw.items())
    programs.append((f"jit(transrate)(traced labels{', ' + label if label else ''})",
                     jax.make_jaxpr(fn)(f, y)))
  programs.append(("grad(jit(transrate))(traced labels)", jax.make_jaxpr(
      jax.grad(jax.jit(lambda x, labels: tj.transrate(x, labels, num_classes=C))))(f, y)))
  assert_clean([(f"{entry}[{n}x{d}]", p) for entry, p in programs])


@pytest.mark.parametrize("gradient", ["analytic", "autodiff"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_transrate_loss_programs(gradient, shape):
  """``transrate_loss``, its ``grad`` and ``jvp`` (the analytic ``custom_jvp`` rule), with
  concrete and traced labels, both weightings."""
  n, d = shape
  f, y, _, _ = _data(n, d)
  programs = []
  for weighting in ("prior", "uniform"):
    def loss(x, labels, weighting=weighting):
      return tj.transrate_loss(x, labels, num_classes=C, weighting=weighting, gradient=gradient)
    tag = f"transrate_loss[{gradient}, {weighting}, {n}x{d}]"
    programs += [
        (tag, jax.make_jaxpr(lambda x: loss(x, y))(f)),
        (f"grad({tag})", jax.make_jaxpr(jax.grad(lambda x: loss(x, y)))(f)),
        (f"jvp({tag})", jax.make_jaxpr(
            lambda x: jax.jvp(lambda z: loss(z, y), (x,), (jnp.ones_like(x),)))(f)),
        (f"jit(grad({tag}))(traced labels)", jax.make_jaxpr(jax.jit(jax.grad(loss)))(f, y)),
    ]
  assert_clean(programs)


def test_streaming_programs():
  """``TransRateStats.update``, ``merge`` and ``finalize`` (scalar and vector ``eps``, both
  weightings)."""
  f, y, _, _ = _data()
  stats = tj.TransRateStats.init(D, num_classes=C, dtype=np.float32)
  full = stats.update(f, y)
  eps = np.asarray([1e-4, 1e-2], np.float32)
  programs = [
      ("TransRateStats.update", jax.make_jaxpr(lambda x: stats.update(x, y))(f)),
      ("TransRateStats.update(mask)", jax.make_jaxpr(
          lambda x: full.update(x, y, mask=np.arange(N) % 5 > 0))(f)),
      ("TransRateStats.merge", jax.make_jaxpr(lambda s: s.merge(s))(full)),
      ("TransRateStats.finalize", jax.make_jaxpr(lambda s: s.finalize())(full)),
      ("TransRateStats.finalize(uniform)", jax.make_jaxpr(
          lambda s: s.finalize(weighting="uniform"))(full)),
      ("TransRateStats.finalize(eps=[E])", jax.make_jaxpr(lambda s: s.finalize(eps=eps))(full)),
  ]
  assert full.sums.dtype == np.float32
  assert_clean(programs)


def _record_programs(monkeypatch, module, names):
  """Replaces ``module``'s jitted functions ``names`` by wrappers that record the program of each
  call (``fn.trace(...).jaxpr``) before running it; returns the list they append to."""
  programs = []
  for name in names:
    fn = getattr(module, name)

    def call(*args, _fn=fn, _name=name, **kwargs):
      programs.append((f"{_name}#{len(programs)}", _fn.trace(*args, **kwargs).jaxpr))
      return _fn(*args, **kwargs)

    monkeypatch.setattr(module, name, call)
  return programs


@pytest.mark.parametrize("preset", [None, "official"])
def test_transrate_from_batches_programs(monkeypatch, preset):
  """``transrate_from_batches`` is a host loop over chunks that reads the sample count between
  its programs, so it cannot be traced whole: it runs on float32 chunks, and every compiled
  program it calls (the statistics update, the official preset's two row passes, the finalize)
  is recorded and audited."""
  f, y, _, _ = _data()
  programs = _record_programs(monkeypatch, streaming, (
      "_update_donated", "_normalized_sum", "_official_rows", "_finalize"))
  chunks = [(f[:20], y[:20]), (f[20:], y[20:])]
  score = tj.transrate_from_batches(chunks, num_classes=C, preset=preset, progress=False)
  assert score.dtype == np.float32
  called = {name.split("#")[0] for name, _ in programs}
  expected = {"_update_donated", "_finalize"}
  if preset == "official":
    expected |= {"_normalized_sum", "_official_rows"}
  assert called == expected, called
  assert_clean([(f"transrate_from_batches(preset={preset}): {name}", p)
                for name, p in programs])


@pytest.mark.parametrize("preset", [None, "official"])
def test_transrate_sharded_programs(monkeypatch, preset):
  """``transrate_sharded`` traced whole: the shard_mapped statistics and the scoring program.
  Between them it reads the first shard of the replicated statistics (``first_shard``, which
  needs a concrete array); under the trace that is the value itself."""
  f, y, _, _ = _data()
  monkeypatch.setattr(streaming, "first_shard", lambda a: a)
  eps = np.asarray([1e-4, 1e-2], np.float32)
  programs = [
      (f"transrate_sharded(preset={preset})",
       jax.make_jaxpr(lambda x: tj.transrate_sharded(x, y, preset=preset))(f)),
      (f"transrate_sharded(preset={preset}, eps=[E])",
       jax.make_jaxpr(lambda x: tj.transrate_sharded(x, y, preset=preset, eps=eps))(f)),
  ]
  assert all(_has(p, "shard_map") for _, p in programs)
  assert_clean(programs)


@pytest.mark.parametrize("shape", SHAPES[::2], ids=lambda s: f"{s[0]}x{s[1]}")
def test_multilabel_and_regression_programs(monkeypatch, shape):
  """``transrate_multilabel`` traced (concrete and traced label matrix), ``quantize_targets`` of
  traced targets (every method), and ``transrate_regression``, which quantises concrete targets
  on the host between its programs: it runs on float32 data and its programs are recorded."""
  from transrate_jax._src import regression  # pylint: disable=import-outside-toplevel
  n, d = shape
  f, _, _, _ = _data(n, d)
  rng = np.random.default_rng(1)
  label_matrix = (rng.random((n, 4)) < np.asarray([0.2, 0.5, 0.8, 0.5])).astype(np.int32)
  targets = (f[:, 0] + 0.1 * rng.normal(size=n)).astype(np.float32)
  joint = np.stack([targets, f[:, 1]], axis=1)
  programs = [
      ("transrate_multilabel", jax.make_jaxpr(
          lambda x: tj.transrate_multilabel(x, label_matrix))(f)),
      ("jit(transrate_multilabel)(traced labels)", jax.make_jaxpr(jax.jit(
          lambda x, m: tj.transrate_multilabel(x, m, weighting="uniform")))(f, label_matrix)),
  ]
  for method in ("quantile", "uniform", "kmeans"):
    programs.append((f"quantize_targets(method={method})", jax.make_jaxpr(
        lambda t, method=method: tj.quantize_targets(t, bins=4, method=method))(targets)))
  recorded = _record_programs(monkeypatch, regression, ("_quantize_jit", "_columns_jit"))
  for t in (targets, joint):
    score = tj.transrate_regression(f, t, bins=4)
    assert score.score.dtype == np.float32
  assert {name.split("#")[0] for name, _ in recorded} == {"_quantize_jit", "_columns_jit"}
  programs += [(f"transrate_regression: {name}", p) for name, p in recorded]
  assert_clean([(f"{entry}[{n}x{d}]", p) for entry, p in programs])


def test_float64_eps_is_not_a_float64_operation(monkeypatch):
  """``eps`` given as float64 NumPy (``np.logspace(...)``, ``np.float64(1e-3)``) with float32
  features: the score is computed in float32, so the program must not take a float64 argument and
  convert it on the device (cast it on the host, in the compute dtype, before the call)."""
  f, y, _, _ = _data()
  monkeypatch.setattr(streaming, "first_shard", lambda a: a)
  full = tj.TransRateStats.init(D, num_classes=C, dtype=np.float32).update(f, y)
  programs = []
  for eps in (np.logspace(-4, -2, 3), np.float64(1e-3)):
    tag = f"eps={type(eps).__name__}{list(np.shape(eps))}"
    programs += [
        (f"transrate({tag})", jax.make_jaxpr(lambda x: tj.transrate(x, y, eps=eps))(f)),
        (f"coding_rate({tag})", jax.make_jaxpr(lambda x: tj.coding_rate(x, eps=eps))(f)),
        (f"TransRateStats.finalize({tag})", jax.make_jaxpr(lambda s: s.finalize(eps=eps))(full)),
        (f"transrate_sharded({tag})",
         jax.make_jaxpr(lambda x: tj.transrate_sharded(x, y, eps=eps))(f)),
    ]
    if np.ndim(eps) == 0:
      programs.append((f"transrate_loss({tag})", jax.make_jaxpr(
          lambda x: tj.transrate_loss(x, y, num_classes=C, eps=eps))(f)))
  # Only the float64 rule is at stake here (the products are audited above).
  problems = [p for entry, closed in programs for p in audit(closed, entry)
              if "float64 value" in p or "float64 constant" in p]
  assert not problems, "float32 precision audit:\n  " + "\n  ".join(problems)
