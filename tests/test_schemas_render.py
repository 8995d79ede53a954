"""docs/schemas.md is the render of `schemas.TABLES`, and documents every column."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import schemas
from schemas.render import render

DOCS = Path(__file__).resolve().parent.parent / "docs" / "schemas.md"


def test_docs_are_up_to_date():
    assert DOCS.read_text() == render(), "docs/schemas.md is stale: run `make docs`"


def test_module_prints_the_render():
    out = subprocess.run([sys.executable, "-m", "schemas.render"], capture_output=True, text=True, check=True,
                         cwd=DOCS.parent.parent)
    assert out.stdout == render()


def test_every_table_and_column_is_documented():
    text = render()
    for column in schemas.PARTITIONS:
        assert f"| `{column}` |" in text
    for table in schemas.TABLES.values():
        assert f"## `{table.name}`" in text and table.doc in text
        for field in table.schema:
            doc = (field.metadata or {}).get(b"doc", b"").decode()
            assert doc, f"{table.name}.{field.name} has no doc"
            assert f"| `{field.name}` | `{field.type}` |" in text
