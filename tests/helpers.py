"""Helpers shared by the end-to-end tests (imported as `helpers`; pytest puts tests/ on the path)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edge.config import TrapConfig, parse_config


def synthetic_config(data_dir: Path, extra: str = "", **source: object) -> TrapConfig:
    """A config for a synthetic sheet night written into `data_dir`; `source` overrides its keys."""
    fields = {"kind": "synthetic", "scene": "sheet", "width": 1280, "height": 720, "frames": 120} | source
    inline = ", ".join(f"{k}: {v}" for k, v in fields.items())
    return parse_config(f"data_dir: {data_dir}\nsource: {{{inline}}}\n{extra}", "test-config")


def query(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read rows from a trapcam database through a separate read-only connection."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()
