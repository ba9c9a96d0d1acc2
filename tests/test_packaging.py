"""The wheel carries sql/ as package data and leaves the development database out (issue 12.6)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from repositories.migrations import discover
from tests.support import ROOT, require


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    uv = shutil.which("uv")
    require(uv is not None, "uv is not on PATH")
    assert uv is not None
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("*.whl")
    return built


def test_the_wheel_has_the_sql_files_inside_the_package(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"repositories/sql/tasks.sql"} | {
        f"repositories/sql/migrations/{m.version:04d}_{m.name}.sql" for m in discover()
    }
    assert expected <= names
    assert not [n for n in names if n.startswith("sql/")]  # no top-level `sql` package


def test_pgserver_is_only_an_extra(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    requires = [
        line for line in archive.read(metadata).decode().splitlines() if "Requires-Dist" in line
    ]
    pgserver = [line for line in requires if "pgserver" in line]
    assert pgserver == ["Requires-Dist: pgserver>=0.1.4; extra == 'embedded'"], requires


def test_an_installed_wheel_finds_its_sql(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # The unpacked wheel first on the path, run from elsewhere: the checkout is not used.
    probe = (
        "import repositories.queries as q, repositories.migrations as m;"
        "print(q.SQL_DIR); print(m.latest_version()); print(len(q.Q))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    where, version, statements = done.stdout.split()
    assert Path(where) == site / "repositories" / "sql"
    assert int(version) == discover()[-1].version
    assert int(statements) > 5
