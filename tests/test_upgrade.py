"""A database written by an earlier release (79b14b1) keeps working: read, appended to, re-parsed."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from crawler import store
from tests.helpers import OFFLINE, REPO, rows, run_cli

OLD_DATABASE = REPO / "tests" / "data" / "movies-79b14b1.db"  # maoyan hot + most-wanted, offline, run 1


@pytest.fixture
def old(tmp_path) -> Path:
    copy = tmp_path / "movies.db"
    shutil.copyfile(OLD_DATABASE, copy)
    return copy


def test_read_commands_read_it_as_it_is(old):
    before = hashlib.sha256(old.read_bytes()).hexdigest()
    runs = json.loads(run_cli("runs", "--db", str(old), "--format", "json").stdout)
    assert [(r["id"], r["status"], r["records"]) for r in runs] == [(1, "ok", 40)]
    top = json.loads(run_cli("top", "hot", "--db", str(old), "--format", "json").stdout)
    assert len(top) == 10 and top[0]["rank"] == 1
    assert run_cli("pages", "--db", str(old)).returncode == 0
    assert hashlib.sha256(old.read_bytes()).hexdigest() == before


def test_a_new_run_is_appended_and_the_old_one_kept(old):
    result = run_cli("crawl.toml", "--offline", "--db", str(old), "-q")
    assert result.returncode == 0, result.stderr
    assert rows(old, "select id, status, records, pages_disallowed from runs order by id") == [
        {"id": 1, "status": "ok", "records": 40, "pages_disallowed": 0},  # migrated: none were, then
        {"id": 2, "status": "ok", "records": OFFLINE.records, "pages_disallowed": 0}]
    assert rows(old, "pragma user_version") == [{"user_version": store.SCHEMA_VERSION}]
    changes = json.loads(run_cli("diff", "hot", "--db", str(old), "--format", "json").stdout)
    assert changes == []  # the same fixtures, read by two releases


def test_its_stored_pages_are_parsed_again(old):
    result = run_cli("reparse", "1", "--db", str(old))
    assert result.returncode == 0, result.stderr
    assert "run 1: 4 stored pages parsed again, 4 ok; records 40 -> 40" in result.stdout
