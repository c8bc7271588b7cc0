"""The docs say what the code does: the site builds with --strict, and every example runs.

Why: docs drift silently. A link to a page that moved, a reference to a renamed function, or an
example that no longer runs are all found here, by the suite, instead of by a reader.

- `mkdocs build --strict` (a broken link, anchor or mkdocstrings reference is a warning, and
  --strict fails on any warning); a page with a broken link is shown to fail it.
- Every fenced `python` or `bash` block of the README, CONTRIBUTING.md and docs/ starts with a marker:
  `# doc-test: run` (run here), `# doc-test: live` (needs the live Space) or `# doc-test: setup`
  (installs, the whole suite, the benchmark). An unmarked block fails, so none escapes by accident.
- The `run` blocks run offline against one replica started by the test (the session's shared one):
  Python blocks in one process, one after the other, with `Replica()` (no settings) handed that
  replica's URL instead of starting another; shell blocks with `--replica` and the target
  `replica` replaced by `--space URL` / `URL`, and `qwen-space` being this checkout's CLI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# docs/serving.md comes with qwen_space_adapter/serve/ (its examples need that server running): it is
# built with the site, but its examples are not run here.
NOT_RUN_HERE = {"serving.md"}
MARKER = re.compile(r"#\s*doc-test:\s*(\w+)")
KINDS = {"run", "live", "setup"}
FENCE = re.compile(r"^(?P<indent>[ ]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
CHECKED_LANGS = {"python", "py", "bash", "sh", "shell", "console"}


def doc_files() -> list[Path]:
    """The README, CONTRIBUTING.md and every page of docs/ (symlinked pages counted once)."""
    files = [README, ROOT / "CONTRIBUTING.md"]
    for page in sorted((ROOT / "docs").rglob("*.md")):
        if page.name not in NOT_RUN_HERE and page.resolve() not in {f.resolve() for f in files}:
            files.append(page)
    return files


def blocks() -> list[tuple[str, str, str, str]]:
    """(where, language, marker kind or "", code) for every checked fenced block."""
    found = []
    for path in doc_files():
        text = path.read_text()
        for m in FENCE.finditer(text):
            lang = m["lang"].lower()
            if lang not in CHECKED_LANGS:
                continue
            body = "\n".join(line[len(m["indent"]) :] for line in m["body"].splitlines())
            first = body.lstrip().splitlines()[0] if body.strip() else ""
            marker = MARKER.match(first)
            where = f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}"
            found.append((where, "python" if lang in ("python", "py") else "bash", marker[1] if marker else "", body))
    return found


def runnable(lang: str) -> list[tuple[str, str]]:
    return [(where, code) for where, language, kind, code in blocks() if kind == "run" and language == lang]


def test_every_example_is_marked_and_most_run():
    found = blocks()
    unmarked = [where for where, _, kind, _ in found if kind not in KINDS]
    assert not unmarked, f"blocks without a valid '# doc-test: run|live|setup' first line: {unmarked}"
    readme = [(lang, kind) for where, lang, kind, _ in found if where.startswith("README.md")]
    # The README's promise: one async, one sync and one CLI example run offline.
    assert readme.count(("python", "run")) >= 2 and ("bash", "run") in readme, readme
    kinds = [kind for _, _, kind, _ in found]
    assert kinds.count("run") >= 15 and kinds.count("live") <= 3, kinds


def test_readme_is_short_and_its_links_resolve():
    text = README.read_text()
    assert len(text.encode()) <= 12_500, f"the README is {len(text.encode())} bytes: move detail to docs/"
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    assert local, "the README links to no file"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


def test_the_benchmark_table_is_the_benchmarks_own():
    # benchmarks/run.py writes its table between the markers of the page it names; the page must
    # hold exactly the table of the last run (benchmarks/results/table.md), figures untouched.
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    assert spec and spec.loader
    run = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = run  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(run)
    finally:
        del sys.modules[spec.name]
    page = Path(run.README).read_text()
    assert run.START in page and run.END in page, f"{run.README} has no table markers"
    table = page.split(run.START + "\n", 1)[1].split("\n" + run.END, 1)[0]
    assert table == (ROOT / "benchmarks" / "results" / "table.md").read_text().strip()


def _mkdocs() -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None:
        pytest.skip("mkdocs is not installed (it is in the test extra: pip install -e '.[test]')")


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )


def test_the_site_builds_strict(tmp_path):
    _mkdocs()
    r = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert r.returncode == 0, r.stdout + r.stderr
    reference = (tmp_path / "site" / "reference" / "provider" / "index.html").read_text()
    assert "create_async_generator" in reference, "the API reference was not generated from the docstrings"
    assert 'class="mermaid"' in (tmp_path / "site" / "architecture" / "index.html").read_text()


def test_a_broken_link_fails_the_build(tmp_path):
    _mkdocs()
    copy = tmp_path / "project"
    copy.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", copy / "docs")  # symlinked files and folders copied as their content
    (copy / "qwen_space_adapter").symlink_to(ROOT / "qwen_space_adapter")
    with (copy / "docs" / "index.md").open("a") as page:
        page.write("\nSee [a page that does not exist](no-such-page.md).\n")
    r = _build(copy / "mkdocs.yml", tmp_path / "site")
    assert r.returncode != 0 and "no-such-page.md" in r.stdout + r.stderr, r.stdout + r.stderr


RUNNER = r'''
import json, os, sys, traceback

from qwen_space_adapter import replica as replica_package
from qwen_space_adapter.replica import launcher

URL = os.environ["DOCS_REPLICA_URL"]


class SharedReplica(launcher.Replica):
    """`Replica()` as the examples write it, handed the test's replica: nothing started or stopped."""

    def __init__(self, settings=None, **overrides):
        super().__init__(settings, **overrides)
        if settings is None and not overrides:
            self.url = URL  # __enter__ starts only a replica without a URL; close() stops only its own


replica_package.Replica = launcher.Replica = SharedReplica
for where, code in json.load(open(sys.argv[1])):
    print(f"=== {where}", flush=True)
    try:
        exec(compile(code, where, "exec"), {"__name__": "__main__"})
    except BaseException:
        traceback.print_exc()
        print(f"=== FAILED {where}", flush=True)
        sys.exit(1)
    print(f"=== ok {where}", flush=True)
'''


def _env(qwen_replica, tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    cli = bin_dir / "qwen-space"  # this checkout's CLI, whatever is installed
    cli.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m qwen_space_adapter "$@"\n')
    cli.chmod(0o755)
    env = dict(os.environ, DOCS_REPLICA_URL=qwen_replica.url, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    for name in ("HF_TOKEN", "QWEN_SPACE"):  # offline: nothing may reach for the live Space
        env.pop(name, None)
    return env


def test_python_examples_run_against_the_replica(qwen_replica, tmp_path):
    examples = runnable("python")
    (tmp_path / "examples.json").write_text(json.dumps(examples))
    (tmp_path / "runner.py").write_text(RUNNER)
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run(
        [sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "examples.json")],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=400,
        env=_env(qwen_replica, tmp_path),
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
    assert r.stdout.count("=== ok ") == len(examples), r.stdout[-3000:]


def _offline(code: str, url: str) -> str:
    code = code.replace("--replica", f"--space {url}")
    return re.sub(r"\b(check|record|load) replica\b", rf"\1 {url}", code)


@pytest.mark.parametrize(("where", "code"), runnable("bash"), ids=[w for w, _ in runnable("bash")])
def test_shell_examples_run_against_the_replica(qwen_replica, tmp_path, where, code):
    r = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", _offline(code, qwen_replica.url)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(qwen_replica, tmp_path),
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, f"{where}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
