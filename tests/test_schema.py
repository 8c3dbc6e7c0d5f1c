"""The store's schema matches the seed README's DDL column by column.

The seed DDL is loaded into a scratch SQLite database and both schemas are read back
with SQLite's own PRAGMAs, so the comparison is of what SQLite understood, not of text.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

SEED_DDL = Path(__file__).parent / "fixtures" / "seed_schema.sql"
TABLES = ("tasks", "task_steps", "transfer_chunks")


def describe(db: Path, table: str) -> dict[str, object]:
    con = sqlite3.connect(db)
    try:
        columns = {
            name: {"type": ctype.upper(), "notnull": bool(notnull), "default": default, "pk": pk}
            for _cid, name, ctype, notnull, default, pk in con.execute(f"PRAGMA table_info({table})")
        }
        fks = sorted((r[3], r[2], r[4]) for r in con.execute(f"PRAGMA foreign_key_list({table})"))
        uniques = sorted(
            tuple(r[2] for r in con.execute(f"PRAGMA index_info('{idx[1]}')"))
            for idx in con.execute(f"PRAGMA index_list({table})")
            if idx[2] and idx[3] == "u"  # unique, created by a UNIQUE constraint in the table DDL
        )
        sql = con.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    finally:
        con.close()
    return {
        "columns": columns,
        "fks": fks,
        "uniques": uniques,
        "autoincrement": "AUTOINCREMENT" in sql.upper(),
    }


@pytest.fixture(scope="module")
def dbs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("schema")
    seed = tmp / "seed.db"
    con = sqlite3.connect(seed)
    con.executescript(SEED_DDL.read_text())
    con.close()
    ours = tmp / "x.db"
    cli = Path(sys.executable).with_name("fuxictr-workflow")
    out = subprocess.run(
        [str(cli), "db", "init", "--url", f"sqlite:///{ours}"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "schema version" in out.stdout
    return seed, ours


@pytest.mark.parametrize("table", TABLES)
def test_seed_columns_identical(dbs: tuple[Path, Path], table: str) -> None:
    seed, ours = (describe(db, table) for db in dbs)
    for name, spec in seed["columns"].items():
        assert name in ours["columns"], f"{table}.{name} missing"
        assert ours["columns"][name] == spec, f"{table}.{name}: {ours['columns'][name]} != seed {spec}"
    # seed columns come first, in the seed's order; anything else is additive
    assert list(ours["columns"])[: len(seed["columns"])] == list(seed["columns"])
    assert ours["fks"] == seed["fks"]
    assert ours["uniques"] == seed["uniques"]
    assert ours["autoincrement"] == seed["autoincrement"]


def test_additive_columns_are_nullable_or_defaulted(dbs: tuple[Path, Path]) -> None:
    """An old client inserting only the seed's columns must still work."""
    seed, ours = dbs
    for table in TABLES:
        extra = set(describe(ours, table)["columns"]) - set(describe(seed, table)["columns"])
        for name in extra:
            spec = describe(ours, table)["columns"][name]
            assert not spec["notnull"] or spec["default"] is not None, f"{table}.{name}"


def test_init_is_idempotent(dbs: tuple[Path, Path]) -> None:
    _seed, ours = dbs
    cli = Path(sys.executable).with_name("fuxictr-workflow")
    out = subprocess.run(
        [str(cli), "db", "init", "--url", f"sqlite:///{ours}"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "already at schema version" in out.stdout
