"""The house stays as built: each package imports only the packages below it (import-linter)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("config", "sandbox", "llms", "feedback", "agent", "runtime", "evals", "dashboard", "chat")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
            "--no-cache",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_import_points_down():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def _copy(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    copy.mkdir()
    for name in PACKAGES:
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__", "data"))
    for name in ("app.py", "pyproject.toml"):
        shutil.copy2(ROOT / name, copy / name)
    return copy


def test_an_import_that_points_up_fails_the_check(tmp_path):
    copy = _copy(tmp_path)
    store = copy / "feedback" / "store.py"
    store.write_text(store.read_text() + "\nfrom agent.session import ChatSession  # noqa\n")
    done = lint_imports(copy)
    assert done.returncode != 0
    assert "feedback.store -> agent.session" in done.stdout, done.stdout[-3000:]


def test_an_import_of_the_page_fails_the_check(tmp_path):
    copy = _copy(tmp_path)
    cli = copy / "evals" / "cli.py"
    cli.write_text(cli.read_text() + "\nimport app  # noqa\n")
    done = lint_imports(copy)
    assert done.returncode != 0 and "evals.cli -> app" in done.stdout, done.stdout[-3000:]
