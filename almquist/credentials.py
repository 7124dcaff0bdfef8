"""The caller's own credential on this machine: the owner key `almquist up` creates on first start, kept in
`~/.almquist/credentials` (mode 0600, like ~/.aws/credentials), which the CLI, the Python client and notebooks
read without extra steps. ALMQUIST_API_KEY overrides the file (CI, another user's key).
"""

from __future__ import annotations

import os
from pathlib import Path

from almquist.config.security import StateConfig

OWNER = "owner"  # the local profile's first user: an admin


def credentials_path() -> Path:
    return Path(os.environ.get("ALMQUIST_CREDENTIALS", Path.home() / ".almquist" / "credentials"))


def read_credential() -> str | None:
    """ALMQUIST_API_KEY, else the first line of the credentials file, else None."""
    if os.environ.get("ALMQUIST_API_KEY"):
        return os.environ["ALMQUIST_API_KEY"].strip()
    return _stored_credential()


def _stored_credential() -> str | None:
    path = credentials_path()
    if path.exists():
        lines = path.read_text().strip().splitlines()
        return lines[0].strip() or None if lines else None
    return None


def write_credential(credential: str, path: Path | None = None) -> Path:
    path = path or credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(credential + "\n")
    os.chmod(path, 0o600)
    return path


def ensure_owner_key(state: StateConfig) -> tuple[str, bool]:
    """The owner's key from the credentials file if the store still accepts it, else a new one for the `owner`
    admin (created if missing), written to the file. Returns (credential, created)."""
    from almquist.state import StateStore

    store = StateStore(state)
    try:
        current = _stored_credential()  # the file's key, whatever ALMQUIST_API_KEY says for this shell
        if current and store.user_for_key(current) is not None:
            return current, False
        owner = store.ensure_user(OWNER, "admin")
        _, credential = store.create_key(owner.user_id, "owner key made by `almquist up`")
        write_credential(credential)
        return credential, True
    finally:
        store.close()


def login_link(state: StateConfig, base_url: str, ttl_s: float = 900.0) -> str:
    """A one-time link that signs the browser page in as the owner (printed by `almquist up`, as Jupyter does)."""
    from almquist.state import StateStore

    store = StateStore(state)
    try:
        token = store.create_login_link(store.ensure_user(OWNER, "admin").user_id, ttl_s)
    finally:
        store.close()
    return f"{base_url.rstrip('/')}/login?token={token}"
