"""Build ``dist/tillbox``: one executable with the commit stamped in (``make binary``).

Run with the virtual environment's Python (the locked dependencies are what gets
bundled)::

    .venv/bin/python packaging/build.py

The version (from pyproject.toml) and the commit are written to
``entrypoints/_build_info.py`` for the length of the build and removed afterwards;
``entrypoints/version.py`` reads them from there when present. PyInstaller
works in a temporary directory and the binary is moved into ``dist/`` only once it is
complete, so a failed build never leaves a half-written or stale-looking binary.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "packaging" / "tillbox.spec"
BUILD_INFO = ROOT / "entrypoints" / "_build_info.py"
TARGET = ROOT / "dist" / "tillbox"


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def commit_id() -> str:
    """The short commit, with ``-dirty`` when tracked files differ from it (as ``git describe --dirty``)."""
    sha = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{sha}-dirty" if dirty else sha


def project_version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def build(workdir: Path) -> Path:
    """Run PyInstaller on the spec; return the executable it wrote under ``workdir``."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--log-level=WARN",
            f"--workpath={workdir / 'work'}",
            f"--distpath={workdir / 'dist'}",
            str(SPEC),
        ],
        cwd=ROOT,
        check=True,
    )
    return workdir / "dist" / "tillbox"


def main() -> int:
    machine = f"{sys.platform} {platform.machine()}"
    if machine != "linux x86_64":
        print(f"build.py: the binary is built on and for Linux x86_64, not {machine}", file=sys.stderr)
        return 1
    try:
        commit = commit_id()
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"build.py: cannot read the git commit ({e}); build from a git checkout", file=sys.stderr)
        return 1
    version = project_version()
    expected = f"tillbox {version} (commit {commit})"

    BUILD_INFO.write_text(
        f'"""Written by packaging/build.py for one build; not in git."""\n\n'
        f'VERSION = "{version}"\nCOMMIT = "{commit}"\n',
        encoding="utf-8",
    )
    try:
        with tempfile.TemporaryDirectory(prefix="tillbox-build-") as tmp:
            built = build(Path(tmp))
            says = subprocess.run([built, "version"], check=True, capture_output=True, text=True).stdout.strip()
            if says != expected:
                print(f"build.py: the new binary says {says!r}, expected {expected!r}", file=sys.stderr)
                return 1
            # The old binary is replaced only by a complete, working new one.
            TARGET.parent.mkdir(exist_ok=True)
            staged = TARGET.with_name(".tillbox.new")
            shutil.copy2(built, staged)
            os.replace(staged, TARGET)
    except subprocess.CalledProcessError as e:
        print(f"build.py: {e.cmd[0]} failed (exit {e.returncode})", file=sys.stderr)
        return 1
    finally:
        BUILD_INFO.unlink(missing_ok=True)

    print(f"built {TARGET.relative_to(ROOT)}: {TARGET.stat().st_size / 1e6:.1f} MB, {says}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
