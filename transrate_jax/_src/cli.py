"""The ``transrate-jax`` command line.

    transrate-jax score [FILE.npz | FEATURES.npy ... --labels LABELS.npy] [--eps E] [--preset P]
                        [--weighting W] [--json]

scores every feature array in the file(s) against the labels and prints them best first. With no
file it scores the example shipped in the package (scikit-learn's digits at several stages of a
fixed feature pipeline). Files are read with pickling disabled.

Every registered metric runs with its defaults (``--metric nleep`` uses N-LEEP's fixed default
key). Every failure, argparse's own included, is one line on stderr and exit code 2. ``--json``
is strict JSON: a non-finite score is written as ``null`` and announced by a warning line on
stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from transrate_jax._src.report import format_table

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "data" / "digits_pipeline.npz"


class InputError(Exception):
  """A problem with the user's files or options, printed as one line."""


_MAGIC = {".npz": b"PK", ".npy": b"\x93NUMPY"}


def _load_array(path: pathlib.Path, what: str):
  try:
    with open(path, "rb") as fh:
      head = fh.read(6)
  except OSError:
    raise InputError(f"{path}: no such file") from None
  if not head.startswith(_MAGIC[path.suffix]):
    raise InputError(f"{path}: not a readable {path.suffix} file")
  try:
    return np.load(path, allow_pickle=False)
  except ValueError as e:  # object arrays need pickling
    raise InputError(f"{path}: cannot read {what} without pickling ({e})") from None
  except Exception as e:  # noqa: BLE001 - any unreadable file becomes one line
    raise InputError(f"{path}: not a readable .npy/.npz file ({type(e).__name__}: {e})") from None


def _set_feature(features: Dict[str, np.ndarray], origin: Dict[str, str], name: str,
                 value: np.ndarray, source: str) -> None:
  """Adds ``features[name]``; two inputs that map to the same name are an error."""
  if name in features:
    raise InputError(f"{source} and {origin[name]} both give a feature set named {name!r}; "
                     "rename one of the files")
  features[name] = value
  origin[name] = source


def _same_labels(a: np.ndarray, b: np.ndarray) -> bool:
  return a.shape == b.shape and bool(np.array_equal(a, b))


def load_inputs(paths: Sequence[str], labels_path: Optional[str]
                ) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
  """Reads ``{name: features}`` and labels from one ``.npz`` or several ``.npy`` files.

  Raises:
    InputError: a missing, unreadable or corrupted file, missing labels, an object array, an
      array that is not numeric, two inputs giving the same feature name (e.g. two files with the
      same stem), or label arrays that disagree (several archives with their own ``labels``, or
      an archive's ``labels`` and ``--labels``).
  """
  if not paths:
    paths = [str(EXAMPLE)]
  features: Dict[str, np.ndarray] = {}
  origin: Dict[str, str] = {}
  labels = None
  labels_from = None
  for p in map(pathlib.Path, paths):
    if p.suffix not in _MAGIC:
      raise InputError(f"{p}: expected a .npz or .npy file")
    if p.suffix == ".npz":
      archive = _load_array(p, "the archive")
      try:
        names = list(archive.files)
        for name in names:
          try:
            value = archive[name]
          except ValueError as e:
            raise InputError(f"{p}: array {name!r} cannot be read without pickling ({e})") from None
          except Exception as e:  # noqa: BLE001 - a corrupted member (BadZipFile, ...)
            raise InputError(f"{p}: not a readable .npz file: array {name!r} is corrupted "
                             f"({type(e).__name__}: {e})") from None
          if name == "labels":
            if labels is not None and not _same_labels(labels, value):
              raise InputError(f"{p} and {labels_from} hold different 'labels' arrays; score "
                               "them separately")
            labels, labels_from = value, str(p)
          else:
            _set_feature(features, origin, name if len(paths) == 1 else f"{p.stem}/{name}",
                         value, str(p))
      except InputError:
        raise
      except Exception as e:  # noqa: BLE001 - a corrupted archive directory
        raise InputError(f"{p}: not a readable .npz file ({type(e).__name__}: {e})") from None
      finally:
        archive.close()
    else:
      _set_feature(features, origin, p.stem, _load_array(p, "the array"), str(p))
  if labels_path is not None:
    labels_path = pathlib.Path(labels_path)
    if labels_path.suffix != ".npy":
      raise InputError(f"{labels_path}: --labels expects a .npy file")
    given = _load_array(labels_path, "the labels")
    if labels is not None and not _same_labels(labels, given):
      raise InputError(f"{labels_path} (--labels) and the 'labels' in {labels_from} differ; "
                       "pass one of them")
    labels = given
  if labels is None:
    raise InputError("no labels: put an array named 'labels' in the .npz or pass --labels "
                     "LABELS.npy")
  if not features:
    raise InputError("no feature arrays found next to 'labels'")
  for name, value in list(features.items()) + [("labels", labels)]:
    if value.dtype == object or not (np.issubdtype(value.dtype, np.number) or
                                     value.dtype == np.bool_):
      raise InputError(f"{name}: expected a numeric array, got dtype {value.dtype}")
  return features, labels


def _score_table(features: Dict[str, np.ndarray], labels: np.ndarray, args) -> List[dict]:
  """One row per feature array, one column per metric, best first under the first metric."""
  import transrate_jax as tj  # noqa: PLC0415 - keeps `--help` fast

  metrics = [m.strip() for m in args.metric.split(",") if m.strip()]
  if not metrics:
    raise InputError(f"--metric names no metric; choose from {', '.join(tj.registered_metrics())}")
  if len(set(metrics)) != len(metrics):
    raise InputError(f"--metric names a metric twice: {args.metric!r}")
  if args.regression or args.multilabel:
    if metrics != ["transrate"]:
      raise InputError("--regression and --multilabel score TransRate only")
  else:
    known = tj.registered_metrics()
    for m in metrics:
      if m not in known:
        raise InputError(f"unknown metric {m!r}; choose from {', '.join(known)}")
  tr_kwargs = dict(eps=args.eps, weighting=args.weighting, preset=args.preset)
  scores: Dict[str, Dict[str, float]] = {m: {} for m in metrics}
  try:
    if args.regression:
      for name, value in features.items():
        r = tj.transrate_regression(value, labels, bins=args.bins, method=args.method,
                                    **tr_kwargs)
        scores["transrate"][name] = float(r.score)
    elif args.multilabel:
      for name, value in features.items():
        scores["transrate"][name] = float(tj.transrate_multilabel(value, labels,
                                                                  **tr_kwargs).score)
    else:
      for m in metrics:
        kwargs = tr_kwargs if m == "transrate" else {}
        out = tj.score_many(m, features, labels, progress=False, **kwargs)
        scores[m] = {k: float(v) for k, v in out.items()}
  except ValueError as e:
    raise InputError(str(e)) from None
  rows = [{"name": k, "n": int(v.shape[0]), "d": int(v.shape[1]) if v.ndim > 1 else 1,
           **{m: scores[m][k] for m in metrics}} for k, v in features.items()]
  # Best first under the first metric; a non-finite score (if a metric ever returns one) last.
  rows.sort(key=lambda r: (not math.isfinite(r[metrics[0]]), -r[metrics[0]]
                           if math.isfinite(r[metrics[0]]) else 0.0))
  return rows


def _warn_non_finite(rows: List[dict], metrics: Sequence[str]) -> None:
  for r in rows:
    for m in metrics:
      if not math.isfinite(r[m]):
        print(f"transrate-jax: warning: {m} of {r['name']!r} is not finite ({r[m]}); "
              "written as null", file=sys.stderr)


def _cmd_score(args) -> int:
  features, labels = load_inputs(args.files, args.labels)
  rows = _score_table(features, labels, args)
  metrics = [k for k in rows[0] if k not in ("name", "n", "d")]
  _warn_non_finite(rows, metrics)
  if args.json:
    strict = [{k: (None if k in metrics and not math.isfinite(v) else v) for k, v in r.items()}
              for r in rows]
    print(json.dumps({"eps": args.eps, "preset": args.preset, "weighting": args.weighting,
                      "target": _target_kind(args), "scores": strict}, indent=2,
                     allow_nan=False))
    return 0
  source = ", ".join(args.files) if args.files else f"example: {EXAMPLE.name} (digits)"
  target = _target_kind(args)
  if target == "classes":
    target = f"{int(np.max(labels)) + 1} classes"
  names = ", ".join("TransRate" if m == "transrate" else m for m in metrics)
  print(f"{names} of {len(rows)} feature sets, {rows[0]['n']} samples, {target} "
        f"[{source}]")
  print(f"eps={args.eps:g}, preset={args.preset}, weighting={args.weighting or 'prior'}; "
        "higher is better, comparable within one target task only.\n")
  for rank, r in enumerate(rows, 1):
    r["rank"] = rank
  columns = [("rank", "rank", "d"), ("name", "features", "s"), ("d", "dim", "d")]
  columns += [(m, "TransRate (nats)" if m == "transrate" else m, ".4f") for m in metrics]
  print(format_table(rows, columns))
  return 0


def _target_kind(args) -> str:
  if args.regression:
    return f"regression targets quantised into {args.bins} bins ({args.method or 'default'})"
  if args.multilabel:
    return "multi-label targets"
  return "classes"


class _Parser(argparse.ArgumentParser):
  """argparse with its errors as :class:`InputError` (one line, exit code 2), not usage + exit."""

  def error(self, message):
    raise InputError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(
      prog="transrate-jax",
      description="Transferability estimation in JAX: which features transfer best?")
  sub = parser.add_subparsers(dest="command", required=True)
  score = sub.add_parser(
      "score", help="score feature arrays against labels",
      description="Score every feature array against the labels, best first. Input: one .npz "
      "holding 'labels' and one or more [n, d] feature arrays, or .npy feature files with "
      "--labels. With no file, the example shipped in the package is scored.")
  score.add_argument("files", nargs="*", help=".npz archive, or .npy feature files")
  score.add_argument("--labels", help=".npy file of [n] integer labels (for .npy inputs)")
  score.add_argument("--eps", type=float, default=1e-4, help="distortion eps (default 1e-4)")
  score.add_argument("--preset", choices=["tllib", "official"], default=None,
                     help="reproduce a public implementation")
  score.add_argument("--weighting", choices=["prior", "uniform"], default=None,
                     help="class weights (default prior)")
  score.add_argument("--metric", default="transrate",
                     help="metric name(s), comma-separated (default transrate); see "
                     "transrate_jax.registered_metrics()")
  target = score.add_mutually_exclusive_group()
  target.add_argument("--regression", action="store_true",
                      help="labels are continuous targets [n] or [n, k]: quantise them into bins")
  target.add_argument("--multilabel", action="store_true",
                      help="labels are an [n, L] 0/1 matrix: mean binary TransRate over labels")
  score.add_argument("--bins", type=int, default=10, help="bins for --regression (default 10)")
  score.add_argument("--method", choices=["quantile", "uniform", "kmeans"], default=None,
                     help="quantisation for --regression (default: quantile for [n], kmeans for "
                     "[n, k])")
  score.add_argument("--json", action="store_true", help="print JSON instead of a table")
  score.set_defaults(run=_cmd_score)

  demo = sub.add_parser(
      "demo", help="rank real ImageNet backbones on MNIST, against the ground truth",
      description="Rank the ported ImageNet backbones (EfficientNet-Lite0/1/2, MobileNetV2) and "
      "their random-init controls on MNIST, which none was trained on: sweep every block with "
      "TransRate and its peers (--metrics all: every registered metric), score the "
      "penultimate features, and print the scores beside the fine-tuning and linear-probe "
      "accuracies with their correlations, the block each metric picks, and a figure. "
      "Offline: weights and data come from installed packages. --zoo runs the same question on "
      "the embedded digits zoo instead (seconds).")
  demo.add_argument("--zoo", action="store_true",
                    help="use the embedded digits zoo (the fast fixture) instead of the real "
                    "backbones")
  demo.add_argument("--models", nargs="*",
                    help="model names (default: the four ImageNet CNNs; zoo names with --zoo)")
  demo.add_argument("--metrics", help="comma-separated metric names, or 'all' for every "
                    "registered metric (default: TransRate, SFDA and the regularized H-score (the "
                    "model and layer recommendations' metrics), GBC, ETran, LEEP and NCE; with "
                    "--zoo every metric but N-LEEP)")
  demo.add_argument("--image-size", type=int, default=None,
                    help="side of the resized MNIST images (default 32; real backbones)")
  demo.add_argument("--n", type=int, default=None,
                    help="MNIST images used, a quarter for target-train and the rest for "
                    "target-test (default 2000)")
  demo.add_argument("--no-random", action="store_true",
                    help="leave out the random-init controls (real backbones)")
  demo.add_argument("--target", default="digits59",
                    help="zoo target task with --zoo (default digits59)")
  demo.add_argument("--plot", default="transrate_demo.png", help="figure path (PNG)")
  demo.add_argument("--no-plot", action="store_true", help="write no figure")
  demo.add_argument("--probe-steps", type=int, default=None,
                    help="linear-probe training steps (default 300; 500 with --zoo)")
  demo.add_argument("--json", action="store_true", help="print JSON instead of tables")
  demo.set_defaults(run=_cmd_demo)
  return parser


def _cmd_demo(args) -> int:
  from transrate_jax._src.demo import main_demo  # noqa: PLC0415
  return main_demo(args)


def _one_line(text: str) -> str:
  return " ".join(str(text).split())


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the command line; returns the exit code (0, or 2 after one error line on stderr)."""
  parser = build_parser()
  try:
    args = parser.parse_args(argv)
    # Only for a real command line: main(argv) called in-process (tests, notebooks) must not
    # switch the persistent cache on for the whole process (a read of it segfaulted in pytest).
    if argv is None and os.environ.get("TRANSRATE_JAX_COMPILATION_CACHE", "1") != "0":
      from transrate_jax._src.cache import enable_compilation_cache  # noqa: PLC0415
      enable_compilation_cache()
    return args.run(args)
  except (InputError, ValueError) as e:
    print(f"transrate-jax: error: {_one_line(e)}", file=sys.stderr)
    return 2
  except Exception as e:  # noqa: BLE001 - any failure is one line, never a traceback
    print(f"transrate-jax: error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
