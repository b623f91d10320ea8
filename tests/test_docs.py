"""The documentation site (docs/): it builds, covers the API, its examples run, a browser shows it.

* The site is built as the README says, with warnings as errors (``sphinx-build -W
  --keep-going``): a broken cross-reference, a docstring that does not parse, a formula that does
  not convert, and a public name without an API entry (``docs/_ext/api_coverage.py``) fail it.
  The build goes to ``docs/_build/html`` (not committed), where a reader can open it afterwards.
* Every name of every public ``__all__`` has its generated API page, holding its description.
* The ```python blocks of every guide, the README's and CONTRIBUTING's run (``_docs_runner.py``;
  blocks fenced ```python no-run are shown only), and so do the docstrings' ``>>>`` examples.
* Headless Chromium opens the built site: the index shows the navigation, the API page of
  ``transrate`` its signature and formula. Screenshots go to ``docs/_build/screenshots/``. The
  test skips, saying why, only where Chromium is not installed and CI is not set (``.ci/run``
  installs it: Debian packages ``chromium`` and ``chromium-driver``).
"""

import fcntl
import importlib
import json
import os
import pathlib
import pkgutil
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

import transrate_jax

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BUILD = DOCS / "_build"
HTML = BUILD / "html"
SCREENSHOTS = BUILD / "screenshots"
RUNNER = pathlib.Path(__file__).resolve().parent / "_docs_runner.py"
PUBLIC_MODULES = ("transrate_jax", "transrate_jax.capture", "transrate_jax.datasets",
                  "transrate_jax.models", "transrate_jax.zoo")
# The command the README names, plus one job (this machine's tests share the cores), a fresh
# environment (-E: every page re-read, so every warning shows) and every page written (-a).
BUILD_COMMAND = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-j", "1",
                 "-E", "-a", str(DOCS), str(HTML)]
BUILD_TIMEOUT_S = 420
# Pages with ```python blocks (the README's: test_readme_quickstart_command_line_runs).
PAGES = [p for p in sorted(DOCS.glob("*.md")) + [ROOT / "CONTRIBUTING.md"]
         if "```python" in p.read_text(encoding="utf-8")]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def _public_names():
  return [(module, name) for module in PUBLIC_MODULES
          for name in importlib.import_module(module).__all__]


def _env():
  env = dict(os.environ)
  env.update({"MPLBACKEND": "Agg", "TQDM_DISABLE": "1", "PYTHONPATH": str(ROOT)})
  return env


def _build_once():
  """Builds the site once per test run, whichever xdist worker asks first; returns its record.

  The workers of one run share ``PYTEST_XDIST_TESTRUNUID``; a lock file serialises them, and the
  first one builds while the others wait and then read its record (``build.json``).
  """
  run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid-{os.getpid()}"
  BUILD.mkdir(parents=True, exist_ok=True)
  record = BUILD / "build.json"
  with open(BUILD / "build.lock", "w", encoding="utf-8") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if record.exists():
        done = json.loads(record.read_text(encoding="utf-8"))
        if done.get("run") == run_id:
          return done
      shutil.rmtree(HTML, ignore_errors=True)
      shutil.rmtree(DOCS / "api" / "generated", ignore_errors=True)  # stubs of removed names
      start = time.perf_counter()
      proc = subprocess.run(BUILD_COMMAND, cwd=ROOT, env=_env(), capture_output=True, text=True,
                            timeout=BUILD_TIMEOUT_S, check=False)
      log = proc.stdout + proc.stderr
      (BUILD / "build.log").write_text(log, encoding="utf-8")
      done = {"run": run_id, "returncode": proc.returncode,
              "seconds": round(time.perf_counter() - start, 1), "log_tail": log[-8000:]}
      record.write_text(json.dumps(done), encoding="utf-8")
      return done
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def site():
  """The built site's HTML folder (built once per run; warnings are errors)."""
  done = _build_once()
  assert done["returncode"] == 0, (
      f"sphinx-build failed (exit {done['returncode']}; warnings are errors; full log in "
      f"{BUILD / 'build.log'}):\n{done['log_tail']}")
  print(f"docs built in {done['seconds']} s into {HTML}")
  return HTML


def test_public_modules_are_the_documented_ones():
  """A new public submodule must join PUBLIC_MODULES here and in docs/conf.py."""
  found = {"transrate_jax"} | {
      f"transrate_jax.{m.name}" for m in pkgutil.iter_modules(transrate_jax.__path__)
      if not m.name.startswith("_")}
  assert found == set(PUBLIC_MODULES)
  conf = (DOCS / "conf.py").read_text(encoding="utf-8")
  for module in PUBLIC_MODULES:
    assert f'"{module}"' in conf, f"docs/conf.py PUBLIC_MODULES lacks {module}"


def test_api_pages_list_each_public_name_once():
  """Every public name is in exactly one autosummary table of docs/api/ (grouped by topic)."""
  listed = {}
  for page in sorted((DOCS / "api").glob("*.rst")):
    text = page.read_text(encoding="utf-8")
    module = re.search(r"^\.\. currentmodule:: (\S+)$", text, re.M).group(1)
    for block in re.findall(r"\.\. autosummary::\n((?:   .*\n|\n)+)", text):
      for line in block.splitlines():
        name = line.strip()
        if name and not name.startswith(":"):
          listed.setdefault((module, name), []).append(page.name)
  missing = [f"{m}.{n}" for m, n in _public_names() if (m, n) not in listed]
  twice = {f"{m}.{n}": pages for (m, n), pages in listed.items() if len(pages) > 1}
  unknown = [f"{m}.{n}" for m, n in listed if (m, n) not in set(_public_names())]
  assert not missing, f"public names without an API entry in docs/api/: {missing}"
  assert not twice, f"listed on several API pages: {twice}"
  assert not unknown, f"API pages list names that are not public: {unknown}"


@pytest.mark.early
@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
def test_site_builds_without_warnings(site):
  for page in ("index", "getting_started", "choosing", "transrate", "selection", "backbones",
               "scale", "metrics", "evaluation", "regression", "regularizer", "cli",
               "benchmarks", "numerics", "references", "notebooks", "contributing",
               "changelog", "api/index"):
    assert (site / f"{page}.html").is_file(), f"{page}.html was not built"
  for notebook in sorted((ROOT / "colab").glob("*.ipynb")):
    assert (site / "notebooks" / f"{notebook.stem}.html").is_file(), notebook.name


@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
def test_every_public_name_has_an_api_page(site):
  missing = []
  for module, name in _public_names():
    page = site / "api" / "generated" / f"{module}.{name}.html"
    if not page.is_file() or f'id="{module}.{name}"' not in page.read_text(encoding="utf-8"):
      missing.append(f"{module}.{name}")
  assert not missing, f"no API page describing {missing}"
  # ... and each is linked from its topic page, reachable from the API index.
  topics = "".join(p.read_text(encoding="utf-8") for p in (site / "api").glob("*.html"))
  unlinked = [f"{m}.{n}" for m, n in _public_names() if f'generated/{m}.{n}.html"' not in topics]
  assert not unlinked, f"API pages not linked from a topic page: {unlinked}"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_guide_examples_run(page, tmp_path):
  proc = subprocess.run([sys.executable, str(RUNNER), str(page)], cwd=tmp_path, env=_env(),
                        capture_output=True, text=True, timeout=300, check=False)
  out = proc.stdout + proc.stderr
  if proc.returncode == 3:
    pytest.skip(f"{page.name} needs a data or weight package: "
                f"{out.strip().splitlines()[-1]}")
  assert proc.returncode == 0, f"{page.name}: an example failed\n{out[-6000:]}"
  print(out)


def test_readme_quickstart_command_line_runs(tmp_path):
  """The README's Python quickstart writes feats.npz; its command line then scores it."""
  readme = (ROOT / "README.md").read_text(encoding="utf-8")
  proc = subprocess.run([sys.executable, str(RUNNER), str(ROOT / "README.md")], cwd=tmp_path,
                        env=_env(), capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  quickstart = readme[readme.index("## Quickstart"):readme.index("## Metrics")]
  commands = [line.split("#")[0].strip() for line in quickstart.splitlines()
              if line.startswith("transrate-jax ")]
  assert commands, "the README's quickstart has no command line"
  script = pathlib.Path(sys.executable).parent / "transrate-jax"
  for command in commands:
    argv = shlex.split(command)
    argv = ([str(script)] if script.exists() else
            [sys.executable, "-c", "from transrate_jax._src.cli import main; main()"]) + argv[1:]
    run = subprocess.run(argv, cwd=tmp_path, env=dict(_env(), TRANSRATE_JAX_COMPILATION_CACHE="0"),
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, f"{command}\n{run.stdout}{run.stderr}"
    assert "rank" in run.stdout, run.stdout


def test_readme_is_two_screens_and_names_every_metric():
  readme = (ROOT / "README.md").read_text(encoding="utf-8")
  assert len(readme.encode("utf-8")) <= 10_240
  missing = [m for m in transrate_jax.registered_metrics() if f"- `{m}`:" not in readme]
  assert not missing, f"the README's metric list lacks {missing}"
  for path in re.findall(r"\]\(((?:docs|colab|benchmarks)/[^)#]+|[A-Z]+\.md)", readme):
    assert (ROOT / path).exists(), f"README links to a missing file: {path}"
  assert "python -m sphinx -W --keep-going -b html docs docs/_build/html" in readme


def test_docstring_examples_run(tmp_path):
  proc = subprocess.run([sys.executable, str(RUNNER), "--doctest", *PUBLIC_MODULES],
                        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300,
                        check=False)
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0, f"a docstring example failed\n{out[-8000:]}"
  assert re.search(r"doctests: [1-9]\d* examples, 0 failed", out), out[-2000:]


def _chromium():
  for name in CHROMIUM_NAMES:
    path = shutil.which(name)
    if path:
      return path
  message = ("Chromium is not installed (Debian: apt-get install chromium chromium-driver; "
             ".ci/run installs it)")
  if os.environ.get("CI"):
    pytest.fail(message + ", and CI must run the browser test")
  pytest.skip(message)
  return None


def _browser(chromium, profile, *args):
  """Runs headless Chromium offline on file:// URLs; returns its stdout."""
  argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--disable-quic", "--no-first-run", "--no-default-browser-check",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-extensions", "--hide-scrollbars", "--mute-audio",
          f"--user-data-dir={profile}", "--virtual-time-budget=3000", *args]
  proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, f"chromium exit {proc.returncode}:\n{proc.stderr[-3000:]}"
  return proc.stdout


def _screenshot(chromium, profile, url, path, size="1280,1400"):
  path.unlink(missing_ok=True)
  _browser(chromium, profile, f"--window-size={size}", f"--screenshot={path}", url)
  assert path.is_file() and path.stat().st_size > 10_000, f"no screenshot of {url}"
  # Not blank: a rendered page has dark text on a light ground.
  import matplotlib.image  # pylint: disable=import-outside-toplevel
  pixels = matplotlib.image.imread(str(path))[..., :3].mean(axis=-1)
  assert (pixels < 0.5).mean() > 0.01 and (pixels > 0.9).mean() > 0.3, f"{path.name} looks blank"


@pytest.mark.timeout(BUILD_TIMEOUT_S + 300)
def test_browser_shows_navigation_and_the_transrate_api_page(site, tmp_path):
  chromium = _chromium()
  SCREENSHOTS.mkdir(parents=True, exist_ok=True)
  profile = tmp_path / "profile"

  index = (site / "index.html").as_uri()
  dom = _browser(chromium, profile, "--dump-dom", index)
  nav = dom[dom.index('class="sidebar-tree"'):]
  for caption in ("Guides", "Notebooks", "Reference", "Project"):
    assert f">{caption}<" in nav, f"the navigation lacks the caption {caption}"
  for href in ("getting_started.html", "choosing.html", "transrate.html", "benchmarks.html",
               "api/index.html", "notebooks.html"):
    assert f'href="{href}"' in nav, f"the navigation lacks a link to {href}"
  _screenshot(chromium, profile, index, SCREENSHOTS / "index.png")

  api = (site / "api" / "generated" / "transrate_jax.transrate.html").as_uri()
  dom = _browser(chromium, profile, "--dump-dom", api)
  start = dom.index('id="transrate_jax.transrate"')
  signature = re.sub(r"<[^>]+>", "", dom[start:dom.index("</dt>", start)])
  for part in ("transrate_jax.", "transrate(", "features", "labels", "eps", "weighting",
               "preset", "num_classes"):
    assert part in signature, f"the signature lacks {part!r}: {signature!r}"
  formula = dom[dom.index("<math", start):dom.index("</math>", start)]
  for part in ("TrR", "det", "log", "<mfrac"):
    assert part in formula, f"the formula lacks {part!r}"
  _screenshot(chromium, profile, api, SCREENSHOTS / "transrate_api.png")
  print(f"screenshots: {SCREENSHOTS / 'index.png'}, {SCREENSHOTS / 'transrate_api.png'}")
