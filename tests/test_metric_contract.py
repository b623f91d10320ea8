"""The metric contract, checked for every registered metric (and for a toy one added in a test).

For each metric of ``registered_metrics()``: it runs with no keywords; eager == ``jit`` ==
``vmap`` over a stack (static ``num_classes``) when it declares itself vmappable; float32 and
float64 inputs keep their dtype and half precision is upcast to float32; the documented bad
inputs raise ``ValueError``; the zero-padding claim holds when declared; ``score_many`` and the
command line give the eager score; and a call prints nothing unless ``progress=True`` is asked
for. The toy metric (tests/toy_metric.py) shows what adding a metric takes: one module, one
registration, and the checks below then cover it.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toy_metric
import transrate_jax as tj
from transrate_jax._src import cli
from transrate_jax._src import registry

N, D, C, CS = 60, 6, 3, 4
NAMES = list(registry.registered_metrics()) + [toy_metric.NAME]
# The metrics whose eager calls below read no platform branch of the backend policy (checked on
# every run; the accelerator-branch rerun leaves those tests out: tests/branch_reads.py).
EAGER_BRANCH_FREE = ("etran", "gbc", "knn_accuracy", "leep", "lfc", "nce", "sfda",
                     toy_metric.NAME)


@pytest.fixture(params=NAMES)
def metric(request):
  """The :class:`Metric` under test; the toy is registered for the test and removed after."""
  name = request.param
  if name == toy_metric.NAME:
    spec = toy_metric.register()
    try:
      yield spec
    finally:
      registry.unregister_metric(name)
    assert name not in registry.registered_metrics()
  else:
    yield registry.get_metric(name)


def _labels(seed=0):
  return np.random.default_rng(seed).permutation(np.arange(N) % C)


def _inputs(spec, seed=0, k=None):
  """One input of the metric's family for the shared labels (a stack of ``k`` with ``k``)."""
  rng = np.random.default_rng(seed + 1)
  y = _labels()

  def one(r):
    if spec.consumes == "features":
      return r.normal(size=(N, D)) + 1.5 * np.eye(D)[y] + 0.1
    if spec.consumes == "source_probs":
      # Multiples of 1/8, so the rows sum to 1 exactly in every float dtype (float16 included).
      counts = r.multinomial(8, np.ones(CS) / CS, size=N) + 0
      counts[np.arange(N), y] += 8  # the source classifier agrees with the labels somewhat
      return counts / 16.0
    return np.where(r.random(N) < 0.7, y, r.integers(0, CS, N)).astype(np.int64)

  if k is None:
    return one(rng)
  return np.stack([one(np.random.default_rng(seed + 10 + i)) for i in range(k)])


def _traced_kw(spec, x):
  """Keywords that set a shape, static under tracing (``num_classes``, ``num_source_classes``)."""
  kw = {"num_classes": C}
  if "num_source_classes" in spec.options:
    kw["num_source_classes"] = CS
  return kw


def test_registry_is_complete():
  for name in registry.registered_metrics():
    spec = registry.get_metric(name)
    assert spec.description, name
    assert spec.consumes in registry.CONSUMES, name
  described = {d["name"] for d in tj.describe_metrics()}
  assert described == set(registry.registered_metrics())


@pytest.mark.branch_free(metric=EAGER_BRANCH_FREE)
def test_runs_with_no_keywords_and_returns_a_scalar(metric):
  y = _labels()
  out = metric.fn(_inputs(metric), y)
  assert isinstance(out, jax.Array) and out.shape == (), metric.name
  assert np.isfinite(float(out)), metric.name


def test_eager_jit_and_vmap_agree(metric):
  y = _labels()
  x = _inputs(metric)
  kw = _traced_kw(metric, x)
  eager = float(metric.fn(x, y))
  np.testing.assert_allclose(float(metric.fn(x, y, **kw)), eager, rtol=1e-9)
  stack = _inputs(metric, seed=3, k=3)
  each = [float(metric.fn(s, y)) for s in stack]
  if metric.vmappable:
    jitted = jax.jit(lambda a: metric.fn(a, y, **kw))
    np.testing.assert_allclose(float(jitted(x)), eager, rtol=1e-6)
    vmapped = jax.jit(jax.vmap(lambda a: metric.fn(a, y, **kw)))(jnp.asarray(stack))
    np.testing.assert_allclose(np.asarray(vmapped), each, rtol=1e-6)
  # score_many (batched when vmappable, one call per input otherwise) equals the eager calls.
  many = tj.score_many(metric.name, list(stack), y)
  np.testing.assert_allclose(np.asarray(many), each, rtol=1e-6)
  stacked = tj.score_many(metric.name, stack, y)  # one stacked array: [L, n, d] or [L, n]
  np.testing.assert_allclose(np.asarray(stacked), each, rtol=1e-6)


@pytest.mark.branch_free(metric=EAGER_BRANCH_FREE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, jnp.bfloat16])
def test_dtype_is_kept_and_half_precision_upcast(metric, dtype):
  if metric.consumes == "source_labels":
    pytest.skip("the input is integer source predictions; no float dtype to keep")
  y = _labels()
  x = jnp.asarray(_inputs(metric), dtype)
  out = metric.fn(x, y)
  want = jnp.float32 if dtype in (np.float16, jnp.bfloat16) else dtype
  assert out.dtype == want, (metric.name, dtype, out.dtype)
  assert np.isfinite(float(out))


def _bad_inputs(spec):
  """(what, x, labels, keywords) that must raise ValueError, for the metric's family."""
  y = _labels()
  x = _inputs(spec)
  cases = [
      ("labels too short", x, y[:-1], {}),
      ("negative label", x, np.where(np.arange(N) == 0, -1, y), {}),
      ("label >= num_classes", x, y, {"num_classes": C - 1}),
      ("float labels", x, y + 0.5, {}),
      ("2-D labels", x, y[:, None], {}),
  ]
  if spec.consumes == "source_labels":
    cases += [("2-D source labels", np.stack([x, x], 1), y, {}),
              ("negative source label", np.where(np.arange(N) == 0, -1, x), y, {}),
              ("float source labels", x + 0.5, y, {})]
  else:
    nan = x.copy()
    nan[3, 1] = np.nan
    inf = x.copy()
    inf[0, 0] = np.inf
    cases += [("NaN", nan, y, {}), ("inf", inf, y, {}), ("1-D input", x[:, 0], y, {}),
              ("3-D input", x[None], y, {}), ("complex input", x + 0j, y, {})]
  return cases


def test_bad_inputs_raise_value_error(metric):
  for what, x, labels, kw in _bad_inputs(metric):
    with pytest.raises(ValueError):
      metric.fn(x, labels, **kw)
      pytest.fail(f"{metric.name}: {what} did not raise")


def test_unknown_option_names_the_metric(metric):
  y = _labels()
  with pytest.raises(ValueError, match=f"metric '{metric.name}' has no option"):
    tj.score_many(metric.name, [_inputs(metric)], y, not_an_option=1)


@pytest.mark.branch_free(metric=tuple(name for name in NAMES if name != "transrate"))
def test_zero_padding_claim(metric):
  if not metric.zero_pad_exact:
    pytest.skip("not declared zero-pad exact")
  y = _labels()
  x = _inputs(metric)
  padded = np.concatenate([x, np.zeros((N, 5))], axis=1)
  np.testing.assert_allclose(float(metric.fn(padded, y)), float(metric.fn(x, y)), rtol=1e-8)


def test_command_line_route(metric, tmp_path, capsys):
  y = _labels()
  x = _inputs(metric)
  path = tmp_path / "inputs.npz"
  np.savez(path, labels=y, a=x)
  code = cli.main(["score", str(path), "--metric", metric.name, "--json"])
  out, err = capsys.readouterr()
  assert code == 0, err
  row = json.loads(out)["scores"][0]
  np.testing.assert_allclose(row[metric.name], float(metric.fn(x, y)), rtol=1e-6)


def test_prints_nothing_unless_progress_is_asked_for(metric, capsys):
  y = _labels()
  stack = list(_inputs(metric, seed=5, k=2))
  metric.fn(stack[0], y)
  tj.score_many(metric.name, stack, y)
  out, err = capsys.readouterr()
  assert out == "" and err == "", (metric.name, out, err)
  tj.score_many(metric.name, stack, y, progress=True)
  _, err = capsys.readouterr()
  assert err, f"{metric.name}: progress=True showed no bar"


def test_toy_metric_matches_its_oracle():
  spec = toy_metric.register()
  try:
    y = _labels()
    x = _inputs(spec)
    np.testing.assert_allclose(float(spec.fn(x, y)), toy_metric.oracle(x, y), rtol=1e-10)
    assert toy_metric.NAME in tj.registered_metrics()
  finally:
    registry.unregister_metric(toy_metric.NAME)


def test_api_reference_lists_the_whole_public_api():
  """The API reference (docs/api/*.rst, grouped by topic) lists every name of ``tj.__all__``.

  (The list moved from the README into the docs site; tests/test_docs.py builds it.)
  """
  import pathlib  # pylint: disable=import-outside-toplevel
  api_dir = pathlib.Path(__file__).resolve().parents[1] / "docs" / "api"
  listed = set()
  for page in api_dir.glob("*.rst"):
    text = page.read_text(encoding="utf-8")
    if ".. currentmodule:: transrate_jax\n" in text:
      listed |= {line.strip() for line in text.splitlines() if line.startswith("   ")}
  missing = [name for name in tj.__all__ if name not in listed]
  assert not missing, f"the API reference (docs/api/) lacks {missing}"
