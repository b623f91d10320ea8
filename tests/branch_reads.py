"""Which platform branches of the backend policy a piece of code reads (for ``branch_free``).

The accelerator-branch rerun (``tests/test_accelerator_branches.py``) runs the numerical suites
again with ``TRANSRATE_JAX_BRANCHES=accelerator``. The policy is the only thing that switch
changes, so a test that never reads a branch of it runs the same programs, with the same numbers,
either way: rerunning it checks nothing new. Such tests carry ``@pytest.mark.branch_free``
(optionally only for some parameters: ``branch_free(metric=("nce", ...))``), the rerun leaves
them out, and ``tests/conftest.py`` checks the mark on every run with :func:`recording`: the
test's setup, call and teardown are recorded, and it fails if a branch was read, or if it starts a
process (whose reads this process cannot see). A branch is read where a program is traced, so a
program traced before the test would hide its reads: JAX's caches are cleared before a marked
test unless the test run just before it in the process was marked too (then every program in the
caches was traced under recording, and any read failed that test).

Not seen: a value computed before the test, by a module- or session-scoped fixture or by the
module's own code at import. Do not mark a test that uses such a value computed by the library.

A branch is any attribute of :class:`backend.Policy` but the two that are the same under both
modes (``platform``, ``sequential_lapack``; checked in ``tests/test_accelerator_branches.py``).
"""

from __future__ import annotations

import contextlib
import subprocess
from typing import Iterator, Set

import jax

from transrate_jax._src import backend

# The Policy attributes the switch leaves as they are.
MODE_INDEPENDENT = frozenset({"platform", "sequential_lapack"})


class _RecordingPolicy:
  """Answers for the policy in force and notes each branch attribute read."""

  def __init__(self, policy: backend.Policy, reads: Set[str]):
    self._policy = policy
    self._reads = reads

  def __getattr__(self, name):
    if name not in MODE_INDEPENDENT:
      self._reads.add(name)
    return getattr(self._policy, name)


def _refuse_processes(*args, **kwargs):
  raise RuntimeError(
      "a test marked branch_free may not start a process: the policy reads of a child process "
      "are not seen here; remove the mark (the accelerator-branch rerun then covers the test)")


@contextlib.contextmanager
def recording(*, clear: bool = True) -> Iterator[Set[str]]:
  """Within the block, every read of a policy branch is added to the yielded set.

  With ``clear``, JAX's caches are cleared on entry (a program traced before would not read the
  policy again). Starting a process raises ``RuntimeError``.
  """
  reads: Set[str] = set()
  original_policy = backend.policy
  original_popen = subprocess.Popen.__init__
  backend.policy = lambda: _RecordingPolicy(original_policy(), reads)
  subprocess.Popen.__init__ = _refuse_processes
  if clear:
    jax.clear_caches()
  try:
    yield reads
  finally:
    backend.policy = original_policy
    subprocess.Popen.__init__ = original_popen


def marked_branch_free(item) -> bool:
  """Whether a pytest item is marked ``branch_free`` for its parameters: each keyword of the
  mark names a parameter and the values for which the mark holds."""
  mark = item.get_closest_marker("branch_free")
  if mark is None:
    return False
  params = getattr(getattr(item, "callspec", None), "params", {})
  return all(key in params and params[key] in values for key, values in mark.kwargs.items())
