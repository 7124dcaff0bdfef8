"""`almquist users|keys|backup|restore` on a durable store of the test's own, as an admin would run them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from almquist.config.security import StateConfig
from almquist.state import Exchange, StateStore


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ALMQUIST_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        "ALMQUIST_CREDENTIALS": str(tmp_path / "credentials"),
        "ALMQUIST_CACHE_DIR": str(tmp_path / "cache"),  # the embedded knowledge stores backup copies
        "COLUMNS": "200",
    }


def almquist(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "almquist.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_an_admin_adds_a_user_with_a_key_lists_and_revokes_it(env: dict[str, str]) -> None:
    added = almquist(env, "users", "add", "ann", "curator", "--key").stdout
    found = re.search(r"alm_[0-9a-f]{16}_\S{43}", added)
    assert found, added
    credential = found.group(0)
    store = StateStore(StateConfig(url=env["ALMQUIST_STATE_URL"]))
    user = store.user_for_key(credential)
    assert user is not None and user.role == "curator"
    listed = almquist(env, "users", "list").stdout
    assert "ann" in listed and "curator" in listed
    key_id = credential.split("_")[1]
    assert key_id in almquist(env, "keys", "list", "ann").stdout
    assert credential not in almquist(env, "keys", "list").stdout  # listings never show a secret
    almquist(env, "keys", "revoke", key_id)
    assert store.user_for_key(credential) is None
    again = almquist(env, "keys", "revoke", key_id, check=False)
    assert again.returncode == 1 and "already revoked" in again.stderr and "Traceback" not in again.stderr
    missing = almquist(env, "users", "delete", "nobody", check=False)
    assert missing.returncode == 1 and "no user 'nobody'" in missing.stderr


def test_backup_and_restore_bring_back_users_sessions_and_history(env: dict[str, str], tmp_path: Path) -> None:
    store = StateStore(StateConfig(url=env["ALMQUIST_STATE_URL"]))
    ann = store.add_user("ann")
    _, credential = store.create_key(ann.user_id)
    session = store.create_session(ann.user_id, "critic")
    store.append(session.session_id, session.thread_id, Exchange("t", "remember tulip", "noted"))
    almquist(env, "backup", str(tmp_path / "backup"))
    store.delete_user(ann.user_id)
    assert store.user_for_key(credential) is None
    almquist(env, "restore", str(tmp_path / "backup"))
    assert store.user_for_key(credential) == ann
    assert [e.user for e in store.history(session.session_id)] == ["remember tulip"]
    refused = almquist(env, "backup", str(tmp_path / "backup"), check=False)  # never over an earlier backup
    assert refused.returncode == 2 and "not empty" in refused.stderr


def test_the_owner_key_is_made_once_private_and_kept_while_the_store_accepts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from almquist.credentials import credentials_path, ensure_owner_key, read_credential

    monkeypatch.setenv("ALMQUIST_CREDENTIALS", str(tmp_path / "home" / "credentials"))
    monkeypatch.setenv("ALMQUIST_API_KEY", "alm_someone_else")  # this shell's override changes nothing on disk
    state = StateConfig(url=f"sqlite:///{tmp_path / 'state.db'}")
    first, created = ensure_owner_key(state)
    assert created and (credentials_path().stat().st_mode & 0o777) == 0o600
    assert ensure_owner_key(state) == (first, False)  # a second `up` keeps it
    assert read_credential() == "alm_someone_else"
    monkeypatch.delenv("ALMQUIST_API_KEY")
    assert read_credential() == first
    store = StateStore(state)
    store.revoke_key(first.split("_")[1])
    second, created = ensure_owner_key(state)  # a key the store no longer accepts is replaced
    assert created and second != first and read_credential() == second
