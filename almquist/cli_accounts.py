"""`almquist users|keys|login-link|me|backup|restore`: identities, API keys and the durable state, from the shell.

`users` and `keys` work on the durable store directly (the profile's `state:`; a SQLite file by default), so an
admin can make the first keys before anything runs. `me` talks to the running system as the caller (gRPC, the
caller's own credential). `backup` / `restore` copy the durable state and the embedded knowledge stores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from almquist.config.security import ROLES, StateConfig

console = Console(stderr=True, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def state_config(profile: str) -> StateConfig:
    """The profile's durable store (`state:` of its conversation app), else the default."""
    from almquist import runtime

    schema = runtime.load_profile(profile)
    for app in schema.applications:
        if app.name == "conversation":
            return StateConfig.model_validate((app.args or {}).get("state") or {})
    return StateConfig()


def _store(args: argparse.Namespace) -> Any:
    from almquist.state import StateStore

    return StateStore(state_config(args.profile))


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def cmd_users(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.action == "add":
        user = store.add_user(args.name, args.role)
        out.print(f"added {user.name} ({user.role}), id {user.user_id}")
        if args.key:
            _, credential = store.create_key(user.user_id, args.label or "made with the user")
            out.print(f"API key (shown once; keep it secret): {credential}")
    elif args.action == "list":
        table = Table(title="users", expand=False)
        for column in ("name", "role", "id", "created", "sessions", "keys"):
            table.add_column(column)
        for user in store.users():
            live_keys = [k for k in store.keys(user.user_id) if k.revoked_at is None]
            table.add_row(
                user.name,
                user.role,
                user.user_id,
                _when(user.created_at),
                str(store.count_sessions(user.user_id)),
                str(len(live_keys)),
            )
        out.print(table)
    elif args.action == "role":
        user = store.set_role(store.user_named(args.name).user_id, args.role)
        out.print(f"{user.name} is now a {user.role}")
    elif args.action == "delete":
        user = store.user_named(args.name)
        counts = store.delete_user(user.user_id)
        out.print(f"deleted {user.name}: " + ", ".join(f"{n} {what}" for what, n in counts.items()))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.action == "create":
        user = store.user_named(args.user)
        key, credential = store.create_key(user.user_id, args.label)
        out.print(f"key {key.key_id} for {user.name} ({user.role}); shown once, keep it secret:")
        out.print(credential)
    elif args.action == "list":
        user_id = store.user_named(args.user).user_id if args.user else None
        names = {u.user_id: u.name for u in store.users()}
        table = Table(title="API keys", expand=False)
        for column in ("key id", "user", "label", "created", "revoked"):
            table.add_column(column)
        for key in store.keys(user_id):
            table.add_row(
                key.key_id, names.get(key.user_id, key.user_id), key.label, _when(key.created_at), _when(key.revoked_at)
            )
        out.print(table)
    elif args.action == "revoke":
        key = store.revoke_key(args.key_id or args.user)
        out.print(f"revoked key {key.key_id}; replicas stop accepting it within the key cache time (auth.key_cache_s)")
    return 0


def cmd_login_link(args: argparse.Namespace) -> int:
    from almquist.credentials import login_link

    base = args.url or f"http://127.0.0.1:{args.http_port}/avatar"
    out.print(login_link(state_config(args.profile), base))
    return 0


def cmd_me(args: argparse.Namespace) -> int:
    from almquist.client import Client

    with Client(args.target) as client:
        if args.action == "whoami":
            me = client.whoami()
            out.print(f"{me.name} ({me.role}), id {me.user_id}")
        elif args.action == "export":
            data = json.dumps(client.export_my_data(), indent=2, ensure_ascii=False)
            if args.output:
                Path(args.output).write_text(data)
                console.print(f"wrote everything kept about you to {args.output}")
            else:
                out.print(data, markup=False)
        elif args.action == "delete":
            if not args.yes:
                console.print("[red]this deletes all your sessions and history; run again with --yes[/red]")
                return 2
            counts = client.delete_my_data()
            out.print(f"deleted {counts.sessions} sessions, {counts.threads} threads, {counts.exchanges} turns")
    return 0


def _embedded_knowledge(profile: str) -> list[Path]:
    from almquist import runtime
    from almquist.config import KnowledgeConfig

    schema = runtime.load_profile(profile)
    args = next((app.args or {} for app in schema.applications if app.name == "conversation"), {})
    knowledge = KnowledgeConfig.model_validate(args.get("knowledge") or {})
    folders = []
    if knowledge.graph.backend == "ladybug":
        folders.append(Path(knowledge.graph.path))
    if not knowledge.vectors.url:
        folders.append(Path(knowledge.vectors.path))
    return folders


def _in_use(folders: list[Path]) -> bool:
    """Whether the running system holds the embedded stores: Qdrant's local mode locks its folder (the graph is
    opened by the same KnowledgeStore actor, so one lock tells for both)."""
    from qdrant_client import QdrantClient

    for folder in folders:
        if (folder / ".lock").exists():
            try:
                QdrantClient(path=str(folder)).close()
            except RuntimeError:  # "Storage folder ... is already accessed by another instance"
                return True
    return False


def cmd_backup(args: argparse.Namespace) -> int:
    target = Path(args.path)
    if target.exists() and any(target.iterdir()):
        console.print(f"[red]{target} is not empty: give a new folder[/red]")
        return 2
    folders = _embedded_knowledge(args.profile)
    if _in_use(folders):
        console.print("[red]the embedded knowledge stores are open in the running system: `almquist down` first[/red]")
        return 2
    target.mkdir(parents=True, exist_ok=True)
    store = _store(args)
    (target / "state.json").write_text(json.dumps({"revision": store.revision(), "tables": store.dump()}))
    for folder in folders:
        if folder.exists():
            shutil.copytree(folder, target / "knowledge" / folder.name)
    out.print(f"backed up the durable state ({store.url}) and {len(folders)} knowledge store(s) to {target}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    source = Path(args.path)
    dump = json.loads((source / "state.json").read_text())
    folders = _embedded_knowledge(args.profile)
    if _in_use(folders):
        console.print("[red]the embedded knowledge stores are open in the running system: `almquist down` first[/red]")
        return 2
    store = _store(args)
    if dump["revision"] != store.revision():
        console.print(f"[red]the backup's schema is {dump['revision']}, this store's {store.revision()}[/red]")
        return 2
    counts = store.load(dump["tables"])
    for folder in folders:
        saved = source / "knowledge" / folder.name
        if saved.exists():
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(saved, folder)
    out.print("restored " + ", ".join(f"{n} {table}" for table, n in counts.items()))
    return 0


def add_account_commands(sub: Any) -> None:
    users = sub.add_parser("users", help="identities in the durable store: add, list, role, delete")
    users.add_argument("action", choices=["add", "list", "role", "delete"])
    users.add_argument("name", nargs="?", default="")
    users.add_argument("role", nargs="?", default="user", choices=ROLES)
    users.add_argument("--key", action="store_true", help="also create an API key for the new user")
    users.add_argument("--label", default="")
    users.add_argument("--profile", default="local")
    users.set_defaults(func=cmd_users)

    keys = sub.add_parser("keys", help="API keys: create USER, list [USER], revoke KEY_ID")
    keys.add_argument("action", choices=["create", "list", "revoke"])
    keys.add_argument("user", nargs="?", default="", help="a user's name or id (create, list)")
    keys.add_argument("key_id", nargs="?", default="", help="the key to revoke")
    keys.add_argument("--label", default="")
    keys.add_argument("--profile", default="local")
    keys.set_defaults(func=cmd_keys)

    link = sub.add_parser("login-link", help="a one-time link that signs the browser avatar in as the owner")
    link.add_argument("--url", default="", help="the avatar page's address (default http://127.0.0.1:PORT/avatar)")
    link.add_argument("--http-port", type=int, default=8000)
    link.add_argument("--profile", default="local")
    link.set_defaults(func=cmd_login_link)

    me = sub.add_parser("me", help="you, as the running system knows you: whoami, export [-o FILE], delete --yes")
    me.add_argument("action", choices=["whoami", "export", "delete"])
    me.add_argument("-o", "--output", default="")
    me.add_argument("--yes", action="store_true")
    me.add_argument("--target", default="localhost:9000")
    me.set_defaults(func=cmd_me)

    backup = sub.add_parser("backup", help="copy the durable state and the embedded knowledge stores to a folder")
    backup.add_argument("path")
    backup.add_argument("--profile", default="local")
    backup.set_defaults(func=cmd_backup)
    restore = sub.add_parser("restore", help="put a backup back (after `almquist down`)")
    restore.add_argument("path")
    restore.add_argument("--profile", default="local")
    restore.set_defaults(func=cmd_restore)
