"""No hangs, by design (transrate_jax/_src/linalg.py) and under stress.

1. Every factorisation goes through ``transrate_jax._src.linalg`` (a walk of the sources).
2. On the CPU, no compiled program of a public entry point holds a batched LAPACK call (the
   calls that wedge XLA's CPU runtime when as many run at once as it has threads), eager, under
   ``jit``, ``vmap`` and ``grad``: read off the lowered program.
3. Two concurrent processes call every entry point repeatedly under a watchdog that dumps every
   thread's stack and fails on a call slower than its bound (``tests/_stress_worker.py``),
   including the regularizer loop that hung on its second step (1,000 steps eager and 1,000 under
   ``jit(grad)``).
"""

import json
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import codegen
import transrate_jax as tj
from transrate_jax._src import backend
from transrate_jax._src import linalg

_PACKAGE = pathlib.Path(tj.__file__).parent
_WORKER = pathlib.Path(__file__).parent / "_stress_worker.py"

# Direct calls of JAX's factorisations; only linalg.py may make them.
_DIRECT = re.compile(
    r"\b(jnp\.linalg\.(cholesky|eigh|eigvalsh|svd|qr|solve|inv|pinv|det|slogdet|lstsq|eig|matrix_rank)"
    r"|jax\.scipy\.linalg|jax\.lax\.linalg|lax\.linalg|jsl\.)")


def _code_lines(path):
  """``(number, line)`` of a module's code lines: comments and docstring text dropped."""
  in_doc = False
  for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
    stripped = line.strip()
    quotes = stripped.count('"""') + stripped.count("'''")
    if in_doc:
      if quotes % 2:
        in_doc = False
      continue
    if stripped.startswith(('"""', "'''", 'r"""')):
      in_doc = quotes % 2 == 1
      continue
    yield number, line.split("#", 1)[0]


def test_every_factorisation_goes_through_linalg():
  offenders = []
  for path in sorted(_PACKAGE.rglob("*.py")):
    if path.name == "linalg.py" and path.parent.name == "_src":
      continue
    for number, line in _code_lines(path):
      if _DIRECT.search(line):
        offenders.append(f"{path.relative_to(_PACKAGE.parent)}:{number}: {line.strip()}")
  assert not offenders, ("call transrate_jax._src.linalg instead (batched LAPACK calls wedge "
                         "XLA's CPU runtime):\n" + "\n".join(offenders))


def test_source_walk_catches_a_direct_call(tmp_path):
  planted = tmp_path / "planted.py"
  planted.write_text('"""Doc: jnp.linalg.cholesky in a docstring is fine."""\n'
                     "x = jnp.linalg.cholesky(a)  # not fine\n", encoding="utf-8")
  hits = [n for n, line in _code_lines(planted) if _DIRECT.search(line)]
  assert hits == [2]


_BATCHED_LAPACK = re.compile(
    r'custom_call @(lapack_\w+|blas_\w+)\([^\n]*?num_batch_dims = "(\d+)"')


def _batched_lapack_calls(fn, *args):
  """The LAPACK/BLAS custom calls with batch dimensions in ``jit(fn)``'s program, read off the
  lowered StableHLO (no XLA compilation spent). JAX places every LAPACK call there; XLA's
  optimisation may duplicate or drop one but never changes a custom call's operand shapes (for
  all 70 programs below, both branches, the compiled HLO had the same batch dimensions)."""
  text = jax.jit(fn).lower(*args).as_text()
  calls = _BATCHED_LAPACK.findall(text)
  targets = re.findall(r"custom_call @(?:lapack|blas)_", text)
  assert len(calls) == len(targets), "the StableHLO format changed: update _BATCHED_LAPACK"
  return [(target, int(dims)) for target, dims in calls if int(dims) > 0]


def _entry_points():
  """``(name, fn, args)``: traceable entry points, each with float32 inputs."""
  rng = np.random.default_rng(0)
  n, d, c = 240, 24, 6
  f = rng.normal(size=(n, d)).astype(np.float32)
  y = np.arange(n) % c
  stack = np.stack([f, f[::-1] * 2.0])
  probs = rng.dirichlet(np.ones(9), size=n).astype(np.float32)
  hard = rng.integers(0, 9, size=n)
  inputs = {"features": (f, stack), "source_probs": (probs, np.stack([probs, probs[::-1]])),
            "source_labels": (hard, np.stack([hard, hard[::-1]]))}
  out = []
  for name in tj.registered_metrics():
    metric = tj.get_metric(name)
    x, xs = inputs[metric.consumes]
    opts = {"num_source_classes": 9} if "num_source_classes" in metric.options else {}
    one = lambda x, metric=metric, opts=opts: metric.fn(x, y, num_classes=c, **opts)
    out.append((f"{name} jit", one, (x,)))
    if metric.vmappable:
      out.append((f"{name} vmap", jax.vmap(one), (xs,)))
  loss = lambda f, l: tj.transrate_loss(f, l, num_classes=c)
  auto = lambda f, l: tj.transrate_loss(f, l, num_classes=c, gradient="autodiff")
  wide = rng.normal(size=(40, 64)).astype(np.float32)  # n <= d: every term on the Gram side
  out += [
      ("transrate traced labels", lambda f, l: tj.transrate(f, l, num_classes=c), (f, y)),
      ("transrate eps vector", lambda f: tj.transrate(f, y, eps=jnp.array([1e-4, 1e-2])), (f,)),
      ("transrate official", lambda f: tj.transrate(f, y, preset="official"), (f,)),
      ("transrate_loss", loss, (f, y)),
      ("grad transrate_loss", jax.grad(loss), (f, y)),
      ("grad transrate_loss (n <= d)", jax.grad(loss), (wide, y[:40])),
      ("grad transrate_loss autodiff", jax.grad(auto), (f, y)),
      ("vmap grad transrate_loss", jax.vmap(jax.grad(loss), (0, None)), (stack, y)),
      ("hessian-vector transrate_loss",
       lambda f, l, v: jax.jvp(jax.grad(lambda g: loss(g, l)), (f,), (v,))[1], (f, y, f)),
  ]
  return out


@pytest.mark.parametrize("branches", ["cpu", "accelerator"])
def test_no_batched_lapack_call_in_any_cpu_program(branches):
  offenders = {}
  with backend.accelerator_branches(branches == "accelerator"):
    for name, fn, args in _entry_points():
      try:
        calls = _batched_lapack_calls(fn, *args)
      except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
              jax.errors.TracerBoolConversionError, ValueError):
        continue  # needs concrete inputs: its own programs are checked by the stress test
      if calls:
        offenders[name] = calls
  assert not offenders, f"batched LAPACK calls on the CPU: {offenders}"


def test_batched_lapack_detector_sees_jaxs_own_batched_call():
  a = np.stack([np.eye(4, dtype=np.float32) * 2] * 3)
  assert _batched_lapack_calls(jax.lax.linalg.cholesky, a)  # what linalg avoids
  assert not _batched_lapack_calls(linalg.cholesky, a)


def test_linalg_matches_jax_with_derivatives():
  jax_linalg = jax.numpy.linalg
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, 5, 5))
  a = np.einsum("kij,klj->kil", x, x) + 5 * np.eye(5)
  b = rng.normal(size=(3, 5, 2))
  chol = linalg.cholesky(a)
  np.testing.assert_allclose(chol, jax_linalg.cholesky(a), rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(linalg.cho_solve(chol, b), np.linalg.solve(a, b), rtol=1e-10)
  np.testing.assert_allclose(linalg.eigvalsh(a), np.linalg.eigvalsh(a), rtol=1e-12)
  w, v = linalg.eigh(a)
  np.testing.assert_allclose(np.einsum("kij,kj,klj->kil", v, w, v), a, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(linalg.svd(a[0], compute_uv=False),
                             np.linalg.svd(a[0], compute_uv=False), rtol=1e-12)
  np.testing.assert_allclose(
      linalg.triangular_solve(chol, b.swapaxes(-1, -2), left_side=False, lower=True,
                              transpose_a=True),
      np.linalg.solve(chol, b).swapaxes(-1, -2), rtol=1e-10)

  def f(ours, m):
    lib = linalg if ours else None
    chol = lib.cholesky(m) if ours else jax_linalg.cholesky(m)
    solve = (lib.cho_solve(chol, b[0]) if ours
             else jax.scipy.linalg.cho_solve((chol, True), b[0]))
    lam = lib.eigvalsh(m) if ours else jax_linalg.eigvalsh(m)
    vec = (lib.eigh(m) if ours else jax_linalg.eigh(m))[1][:, -1]
    return (jnp.sum(jnp.log(jnp.diagonal(chol))) + jnp.sum(solve ** 2) + jnp.sum(lam ** 1.5)
            + jnp.sum(vec ** 2 * jnp.arange(5.0)))

  m = jnp.asarray(a[0])
  for transform in (jax.grad, jax.hessian):
    np.testing.assert_allclose(transform(lambda m: f(True, m))(m),
                               transform(lambda m: f(False, m))(m), rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(jax.vmap(jax.grad(lambda m: f(True, m)))(a),
                             jax.vmap(jax.grad(lambda m: f(False, m)))(a), rtol=1e-9, atol=1e-12)
  with pytest.raises(ValueError, match="no derivative"):
    jax.grad(lambda m: jnp.sum(linalg.svd(m, compute_uv=False)))(m)


def _run_workers(parts, timeout):
  procs = [subprocess.Popen([sys.executable, str(_WORKER), part, str(count)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # repeated calls of compiled programs: at JAX's default level
                            env={**codegen.default_level_env(), "JAX_ENABLE_X64": "0"})
           for part, count in parts]
  results = []
  for proc, (part, _) in zip(procs, parts):
    try:
      out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # the watchdog inside should have fired first
      for p in procs:
        p.kill()
      pytest.fail(f"stress worker {part!r} still running after {timeout} s")
    results.append((part, proc.returncode, out, err))
  for part, code, out, err in results:
    assert code == 0, (f"stress worker {part!r} failed (exit {code}): a call exceeded its bound "
                       f"or raised.\nstdout:\n{out[-4000:]}\nstderr (thread stacks):\n"
                       f"{err[-12000:]}")
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines[-1] == {"done": part}, out[-2000:]
  return results


@pytest.mark.early
@pytest.mark.timeout(1500)
def test_every_entry_point_repeated_in_two_concurrent_processes():
  """One process: the regularizer loop that hung on its second call, 1,000 steps eager and 1,000
  under ``jit(grad)``. The other at the same time: every registered metric eager, jitted and
  vmapped, TransRate under a user's jit at the shape that hung intermittently, ``transrate_many``,
  ``score_many``, sharded and streaming TransRate, each repeated."""
  _run_workers([("loss", 1000), ("metrics,many", 2)], timeout=1400)
