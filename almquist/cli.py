"""`almquist`: run the system (`up`, `down`, `status`) and talk to it over gRPC (`ask`, `chat`)."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from almquist.cli_accounts import add_account_commands, state_config
from almquist.cli_audio import add_audio_commands
from almquist.cli_media import add_media_commands
from almquist.client import DEFAULT_TARGET, Client
from almquist.credentials import credentials_path, ensure_owner_key, login_link
from almquist.errors import AlmquistError
from almquist.limits import PROXY_ENV
from almquist.v1 import common_pb2, conversation_pb2

# Messages are never wrapped to the terminal: scripts and tests read them, and a wrap would split their words.
console = Console(stderr=True, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def _ray_bin() -> str:
    return shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"


def _dashboard_answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=5):
            return True
    except urllib.error.HTTPError:  # it answered (401 in token mode without our token): it is there
        return True
    except OSError:
        return False


def _connect() -> None:
    import ray

    ray.init(address="auto", namespace="serve", log_to_driver=False, logging_level=logging.ERROR)


def _status_table(status: Any) -> Table:
    table = Table(title="Serve applications", expand=False)
    for column in ("application", "app status", "deployment", "status", "replicas", "message"):
        table.add_column(column)
    for app_name, app in status.applications.items():
        if not app.deployments:
            table.add_row(app_name, app.status, "", "", "", app.message[:80])
        for name, dep in app.deployments.items():
            replicas = ", ".join(f"{state}={n}" for state, n in dep.replica_states.items()) or "-"
            table.add_row(app_name, app.status, name, dep.status, replicas, (dep.message or app.message)[:80])
    return table


def cmd_up(args: argparse.Namespace) -> int:
    from almquist import runtime
    from almquist.ops import tls_front

    # Token auth (RAY_AUTH_MODE=token, the token created once) for `ray start`, and for this process's ray.init and
    # job client; a RAY_AUTH_MODE the caller set is kept. Set before anything imports Ray (load_profile does): Ray
    # reads the mode once, and a process that read "disabled" cannot join the token-mode cluster it just started.
    os.environ.update(runtime.ray_auth_env())
    # The gRPC proxy's global message cap (almquist/limits.py): gRPC refuses a larger message from its length prefix
    os.environ.update({name: value for name, value in PROXY_ENV.items() if name not in os.environ})
    schema = runtime.load_profile(args.profile, grpc_port=args.grpc_port, http_port=args.http_port, host=args.host)
    public_host = schema.http_options.host
    tls = None
    if args.tls_cert or args.tls_key or args.tls_client_ca:
        if not (args.tls_cert and args.tls_key):
            console.print("[red]TLS needs --tls-cert and --tls-key[/] (and --tls-client-ca for mutual TLS)")
            return 2
        try:
            tls = tls_front.TLSConfig.for_ports(
                args.tls_cert,
                args.tls_key,
                args.tls_client_ca,
                public_host,
                schema.grpc_options.port,
                schema.http_options.port,
            )
            # The front takes the public ports; Serve's proxies move behind it, the HTTP one onto 127.0.0.1.
            schema = runtime.load_profile(
                args.profile, grpc_port=tls.backend_grpc_port, http_port=tls.backend_http_port, host="127.0.0.1"
            )
            front = tls_front.start(tls)  # first: a bad certificate or a missing nginx stops `up` before Ray starts
        except (ValueError, tls_front.TLSFrontError) as error:
            console.print(f"[red]TLS[/]: {escape(str(error))}")
            return 2
        mutual = ", mutual TLS" if tls.client_ca else ""
        console.print(
            f"[bold]TLS front[/] (nginx, pid {front.pid}{mutual}) on {public_host}: {tls.grpc_port}, {tls.http_port}"
        )
    elif tls_front.stop():  # an earlier `up --tls-cert ...` left its front on the ports Serve's proxies now take
        console.print("[bold]TLS front[/] of an earlier `up` stopped (no certificate given this time)")
    # Logical CPUs, not cores: the local profile's replicas reserve ~1.6 and the knowledge job ~1 more, so a 2-core
    # laptop declares 4 and lets them share the cores rather than leave the job pending.
    head = runtime.head_start_command(_ray_bin(), args.num_cpus or max(4, os.cpu_count() or 1), host=public_host)
    if subprocess.run([_ray_bin(), "status"], capture_output=True).returncode != 0:
        console.print(f"[bold]Starting Ray[/] ({' '.join(head[1:])})")
        subprocess.run(head, check=True, stdout=subprocess.DEVNULL)
    elif not _dashboard_answers(runtime.endpoints(schema)["Ray dashboard"]):
        # a Ray that `up` did not start (a notebook's ray.init(), another program's): deploying into it would put
        # Almquist in someone else's cluster, and its knowledge job could not be submitted (no dashboard)
        console.print(
            "[red]Another Ray runs on this machine without a dashboard (a notebook's or another program's "
            "ray.init()), and `almquist up` will not deploy into it.[/red] Stop that program (or `almquist down`), "
            "then run the same command again."
        )
        return 1
    _connect()
    state = state_config(args.profile)
    _, created = ensure_owner_key(state)  # every call needs a credential: the CLI and notebooks read this one
    if created:
        console.print(f"[bold]Owner key[/] (an admin) written to {credentials_path()} (mode 0600)")
    console.print(f"[bold]Deploying profile[/] {runtime.profile_path(args.profile)}")
    runtime.deploy(schema)
    names = [app.name for app in schema.applications]
    try:
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            status = runtime.wait_running(
                names, timeout_s=args.timeout, on_update=lambda s: live.update(_status_table(s))
            )
    except (runtime.DeploymentFailed, TimeoutError) as error:
        console.print()  # off the status table's last line
        console.print(f"[red]{escape(str(error))}[/red]")
        return 1
    table = Table(title="Almquist is up", show_header=False)
    for name, address in runtime.endpoints(schema, tls=tls).items():
        table.add_row(name, address)
    sign_in = ""
    for app in schema.applications:  # the browser avatar (web/), for anyone without UE5
        if app.import_path == "graphs.web_avatar:build_app":
            page = f"http://127.0.0.1:{schema.http_options.port}{app.route_prefix}"
            if tls is not None:  # the page through the front, where the certificate is
                page = f"https://{public_host}:{tls.http_port}{app.route_prefix}"
            table.add_row("Browser avatar", f"{page}/")
            sign_in = login_link(state, page)
    out.print(table)
    if sign_in:  # on a line of its own: a table cell would cut the link to the terminal's width
        out.print(f"Sign the browser in (once; the link works for 15 minutes): {sign_in}")
    target = runtime.endpoints(schema)["gRPC (Serve proxy)"]
    _install_dashboard()
    if args.kb:
        _bootstrap_knowledge(schema, args.kb_lines)
    out.print(f'Talk to it:  almquist ask "Who directed [Inception]?" --target {target}')
    out.print("             almquist chat    |   almquist status   |   almquist kb stats   |   almquist down")
    if os.environ.get("RAY_AUTH_MODE") == "token":
        # Ray's own CLI and ray.init(address="auto") read the token file only in token mode (tried: without the
        # variable `ray job status` answers InvalidAuthToken); the almquist commands set it themselves
        out.print("Ray runs with token auth: `export RAY_AUTH_MODE=token` in shells and notebooks that join it")
    return 0 if status else 1


def _bootstrap_knowledge(schema: Any, lines: int | None) -> None:
    """Fills an empty knowledge base from MetaQA in a Ray job; a loaded one is checked and left (seconds)."""
    from almquist import runtime

    job_id, what = runtime.submit_knowledge_job(schema, runtime.endpoints(schema)["Ray dashboard"], limit=lines)
    if job_id is None:
        console.print(f"[yellow]Knowledge base[/]: {what}")
        return
    console.print(
        f"[bold]Knowledge base[/]: {what} as Ray job {job_id} (train the path model if missing, then ingest MetaQA;"
        " the first time takes minutes on a laptop, answers are ungrounded until it commits).\n"
        f"  Follow it: RAY_AUTH_MODE=token ray job logs -f {job_id}   (or the dashboard's Jobs tab)"
    )


def _install_dashboard() -> None:
    from almquist import metrics

    try:
        path = metrics.install_dashboard()
    except OSError as error:  # a read-only session folder must not fail `up`
        console.print(f"[yellow]Grafana dashboard not installed[/]: {error}")
        return
    console.print(f"[bold]Grafana dashboard[/] beside Ray's own: {path}")


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Writes our Grafana dashboard into the running Ray session (beside Ray's) or to --output."""
    from almquist import metrics

    if args.output:
        args.output.write_text(metrics.render_dashboard())
        out.print(str(args.output))
        return 0
    try:
        _connect()
    except ConnectionError:
        console.print("[red]No Ray is running here[/] (almquist up), or give --output FILE")
        return 1
    out.print(str(metrics.install_dashboard()))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from almquist.ops import tls_front

    if tls_front.stop():
        console.print("TLS front (nginx) stopped.")
    subprocess.run([_ray_bin(), "stop", "--force"], check=False, stdout=subprocess.DEVNULL)
    console.print("Ray and Serve stopped.")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """One table: what this machine has for the profile, and whether Almquist runs; exit 1 when a row failed."""
    from almquist import doctor, runtime

    findings = doctor.diagnose(runtime.load_profile(args.profile))
    table = Table(title=f"almquist doctor ({args.profile} profile)")
    for column in ("check", "status", "found", "what to do"):
        table.add_column(column)
    colours = {"ok": "green", "warn": "yellow", "fail": "red"}
    for finding in findings:
        status = f"[{colours[finding.status]}]{finding.status}[/]"
        table.add_row(escape(finding.check), status, escape(finding.detail), escape(finding.fix))
    out.print(table)
    failed = [f for f in findings if f.status == "fail"]
    if failed:
        console.print(
            f"[red]{len(failed)} check(s) failed[/]: do what their row says, then run `almquist doctor` again"
        )
    return 1 if failed else 0


def cmd_status(args: argparse.Namespace) -> int:
    try:
        _connect()
    except ConnectionError:
        console.print("[red]No Ray cluster is running[/]: start one with `almquist up`.")
        return 1
    from ray import serve

    out.print(_status_table(serve.status()))
    return 0


def _print_stream(events, show_route: bool = True) -> conversation_pb2.ServerEvent | None:
    """Prints tokens as they arrive; returns the TurnEnd event."""
    for event in events:
        kind = event.WhichOneof("event")
        if kind == "turn_started" and show_route:
            started = event.turn_started
            console.print(f"[dim]({started.intent} -> {started.route}, {started.confidence:.2f})[/]")
        elif kind == "citation":  # the graph facts behind a grounded answer, shown before the LLM phrases them
            console.print(f"[dim]source: {' | '.join(event.citation.path) or event.citation.snippet}[/]")
        elif kind == "token":
            out.print(event.token.text, end="", soft_wrap=True)
            out.file.flush()
        elif kind == "error":
            console.print(f"\n[red]error {event.error.code}[/]: {event.error.message}")
        elif kind == "turn_end":
            out.print()
            end = event.turn_end
            if end.reason != common_pb2.TURN_END_REASON_COMPLETED:
                console.print(f"[yellow]{common_pb2.TurnEndReason.Name(end.reason)}[/] {end.detail}")
            return event
    return None


def _rpc_error(error: grpc.RpcError) -> int:
    console.print(f"[red]{error.code().name}[/]: {error.details()}")  # type: ignore[attr-defined]
    return 2


def cmd_ask(args: argparse.Namespace) -> int:
    with Client(args.target) as client:
        try:
            _print_stream(client.ask_stream(args.question, args.session, args.personality, args.max_tokens))
        except grpc.RpcError as error:
            return _rpc_error(error)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    start = conversation_pb2.SessionStart(
        session_id=args.session, personality=args.personality, user_id=os.environ.get("USER", "")
    )
    with Client(args.target) as client:
        conversation = client.converse(start)
        try:
            started = conversation.next_event().session_started
        except grpc.RpcError as error:
            return _rpc_error(error)
        console.print(
            f"[bold]Session {started.session_id}[/] ({started.personality}). "
            "Ctrl-C interrupts an answer; /quit or Ctrl-D leaves."
        )
        events = conversation.events()
        while True:
            try:
                line = input("you> ").strip()
            except (EOFError, KeyboardInterrupt):
                break
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            conversation.send_text(line)
            while True:
                try:
                    _print_stream(events, show_route=args.verbose)
                    break
                except KeyboardInterrupt:
                    conversation.interrupt("user pressed Ctrl-C")
                except grpc.RpcError as error:
                    return _rpc_error(error)
        conversation.close_send()
        console.print(f"Bye. Resume with: almquist chat --session {started.session_id}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _kb_tool_parser(name: str, help_text: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"almquist kb {name}", description=help_text)
    parser.add_argument("--target", default=os.environ.get("ALMQUIST_TARGET", DEFAULT_TARGET))
    parser.add_argument("--snapshot", default="", help="snapshot id to pin (default: the latest committed)")
    return parser


def _ranked_table(title: str, entities: Any) -> Table:
    table = Table(title=title)
    for column in ("#", "id", "kind", "PageRank"):
        table.add_column(column, justify="right" if column in ("#", "PageRank") else "left")
    for rank, entity in enumerate(entities, 1):
        table.add_row(str(rank), entity.id, entity.kind, f"{entity.score:.6f}")
    return table


def kb_influential(argv: list[str]) -> int:
    parser = _kb_tool_parser("influential", "the most influential entities by PageRank over the people-movie graph")
    parser.add_argument("--label", default="Person", help="entities of this label (Person, Movie, ...)")
    parser.add_argument("--limit", type=_positive, default=10)
    args = parser.parse_args(argv)
    with Client(args.target) as client:
        response = client.influential(args.label, args.limit, args.snapshot)
    out.print(_ranked_table(f"Most influential ({args.label}, PageRank)", response.entities))
    return 0


def kb_community(argv: list[str]) -> int:
    parser = _kb_tool_parser("community", "the Louvain community of an entity, or the largest communities")
    parser.add_argument("entity_id", nargs="?", default="", help="e.g. 'Person:Tom Hanks'; omit for the largest")
    parser.add_argument("--label", default="", help="list only members of this label")
    parser.add_argument("--limit", type=_positive, default=10, help="top members per community")
    parser.add_argument("--communities", type=_positive, default=5, help="how many communities without an entity")
    args = parser.parse_args(argv)
    with Client(args.target) as client:
        response = client.community(args.entity_id, args.limit, args.label, args.communities, args.snapshot)
    for community in response.communities:
        title = f"Community #{community.index} of {response.total}: {community.size} entities (top by PageRank)"
        out.print(_ranked_table(title, community.members))
    return 0


def kb_path(argv: list[str]) -> int:
    parser = _kb_tool_parser("path", "a shortest path between two entities (any relationship, either direction)")
    parser.add_argument("src_id")
    parser.add_argument("dst_id")
    parser.add_argument("--max-hops", type=_positive, default=3)
    args = parser.parse_args(argv)
    with Client(args.target) as client:
        response = client.shortest_path(args.src_id, args.dst_id, args.max_hops, args.snapshot)
    if not response.found:
        out.print(f"No path from {args.src_id} to {args.dst_id} within {args.max_hops} hops.")
        return 1
    table = Table(title=f"Shortest path ({len(response.relations)} hops)")
    for column in ("step", "id", "via"):
        table.add_column(column)
    for step, node_id in enumerate(response.ids):
        table.add_row(str(step), node_id, response.relations[step - 1] if step else "")
    out.print(table)
    return 0


KB_TOOLS = {"influential": kb_influential, "community": kb_community, "path": kb_path}  # over gRPC, no Ray


def cmd_kb(args: argparse.Namespace) -> int:
    """Knowledge-base operations run as their own modules, so this package stays below the layers it drives."""
    if args.kb_command in KB_TOOLS:
        try:
            return KB_TOOLS[args.kb_command](args.rest)
        except grpc.RpcError as error:
            return _rpc_error(error)
    env = dict(os.environ)
    if subprocess.run([_ray_bin(), "status"], capture_output=True).returncode == 0:
        env.setdefault("RAY_ADDRESS", "auto")  # join the running cluster: its KnowledgeStore actor owns the stores
    if args.kb_command == "train":
        command = [sys.executable, "-m", "deployments.kgqa.train", *args.rest]
    else:
        command = [sys.executable, "-m", "ingestion", args.kb_command, *args.rest]
    return subprocess.run(command, env=env).returncode


def _plan_table(report: Any, scenario: str) -> Table:
    budget = report.plan.gpu.budget_gib
    table = Table(title=f"GPU plan, {scenario} replicas ({report.plan.gpu.model}, budget {budget:.1f} GiB per card)")
    for column in ("node", "gpu", "num_gpus", "memory GiB", "of budget", "replicas"):
        table.add_column(column, justify="left" if column in ("node", "replicas") else "right")
    for card in report.placements[scenario].cards:
        share = card.memory_gib / budget
        style = "red" if share > 1 else ("yellow" if share > 0.9 else "")
        table.add_row(
            card.node,
            str(card.index),
            f"{card.used:.2f}",
            f"{card.memory_gib:.2f}",
            f"{share:.0%}",
            ", ".join(card.residents) or "-",
            style=style,
        )
    return table


def cmd_plan(args: argparse.Namespace) -> int:
    """`plan check`: the GPU placement plan, proved; `plan resources`: this node's `ray start --resources`."""
    import json
    import socket

    from almquist.ops import placement

    try:
        if args.plan_command == "resources":
            plan = placement.load_plan(args.plan or placement.plan_path(args.profile))
            if args.node:
                node = plan.node(args.node)
            elif args.address:  # the addresses given, and only those: the answer must not depend on this machine
                node = placement.local_node(plan, "", set(args.address))
            else:
                import psutil  # a Ray dependency

                hostname = socket.gethostname()
                addresses = {a.address for nic in psutil.net_if_addrs().values() for a in nic}
                node = placement.local_node(plan, hostname, addresses)
            print(json.dumps(plan.node_resources(node)))
            return 0
        report = placement.check_profile(args.profile, args.plan)
    except (placement.PlanError, FileNotFoundError) as error:
        console.print(f"[red]{escape(str(error))}[/red]")
        return 2
    for scenario in placement.SCENARIOS:
        out.print(_plan_table(report, scenario))
    for problem in report.errors:
        console.print(f"[red]error:[/red] {problem}")
    if report.ok:
        console.print(f"[green]plan ok[/green]: {len(report.demands)} deployments, no card over its budget")
    return 0 if report.ok else 1


def _ingestion(arguments: list[str]) -> int:
    env = dict(os.environ)
    if subprocess.run([_ray_bin(), "status"], capture_output=True).returncode == 0:
        env.setdefault("RAY_ADDRESS", "auto")  # the running cluster's KnowledgeStore actor owns the stores
    return subprocess.run([sys.executable, "-m", "ingestion", *arguments], env=env).returncode


def cmd_ingest(args: argparse.Namespace) -> int:
    return _ingestion(["feeds", *args.rest])


def cmd_feeds(args: argparse.Namespace) -> int:
    return _ingestion([f"feeds-{args.feeds_command}", *args.rest])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="almquist", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start Ray (with the dashboard) and deploy a profile")
    up.add_argument("--profile", default="local", help="profile name in serve_config/ or a YAML path")
    up.add_argument("--grpc-port", type=int, default=None)
    up.add_argument("--http-port", type=int, default=None)
    up.add_argument(
        "--host", default=None, help="where the public ports listen (default: the profile's; local: 127.0.0.1)"
    )
    up.add_argument(
        "--tls-cert",
        type=Path,
        default=os.environ.get("ALMQUIST_TLS_CERT") or None,
        help="TLS on the public gRPC and HTTP ports: the server certificate chain, PEM (env ALMQUIST_TLS_CERT)",
    )
    up.add_argument(
        "--tls-key", type=Path, default=os.environ.get("ALMQUIST_TLS_KEY") or None, help="its key (ALMQUIST_TLS_KEY)"
    )
    up.add_argument(
        "--tls-client-ca",
        type=Path,
        default=os.environ.get("ALMQUIST_TLS_CLIENT_CA") or None,
        help="mutual TLS: clients must show a certificate this CA signed (ALMQUIST_TLS_CLIENT_CA)",
    )
    up.add_argument("--num-cpus", type=int, default=None, help="logical CPUs for the Ray head (default: cores, >= 4)")
    up.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for RUNNING")
    up.add_argument(
        "--no-kb", dest="kb", action="store_false", help="don't load MetaQA into an empty knowledge base on start"
    )
    up.add_argument("--kb-lines", type=int, default=None, help="load only the first N lines of kb.txt (a quick demo)")
    up.set_defaults(func=cmd_up)

    sub.add_parser("down", help="stop Serve and Ray").set_defaults(func=cmd_down)
    sub.add_parser("status", help="applications, deployments and replicas (Serve's status)").set_defaults(
        func=cmd_status
    )
    doctor = sub.add_parser("doctor", help="system libraries, ports, disk, memory, models, Ray auth, Serve: one table")
    doctor.add_argument("--profile", default="local", help="a profile name or a Serve config YAML (default: local)")
    doctor.set_defaults(func=cmd_doctor)

    ingest = sub.add_parser("ingest", help="poll every source of a config once and ingest what is new (progress)")
    ingest.add_argument("rest", nargs=argparse.REMAINDER, help="SOURCES.yaml [--state-dir DIR] [--secrets FILE]")
    ingest.set_defaults(func=cmd_ingest)
    feeds = sub.add_parser("feeds", help="the FeedScheduler in the running cluster: start SOURCES.yaml, health, stop")
    feeds.add_argument("feeds_command", choices=["start", "health", "stop"])
    feeds.add_argument("rest", nargs=argparse.REMAINDER)
    feeds.set_defaults(func=cmd_feeds)

    kb = sub.add_parser(
        "kb", help="knowledge base: ingest (metaqa, neo4j-movies), train, snapshots, rollback, stats; graph tools"
    )
    kb.add_argument(
        "kb_command", choices=["metaqa", "neo4j-movies", "train", "snapshots", "rollback", "stats", *KB_TOOLS]
    )
    kb.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the command (see its --help)")
    kb.set_defaults(func=cmd_kb)

    dash = sub.add_parser("dashboard", help="install our Grafana dashboard beside Ray's (running session)")
    dash.add_argument("--output", type=Path, default=None, help="write the dashboard JSON here instead")
    dash.set_defaults(func=cmd_dashboard)

    plan = sub.add_parser("plan", help="the GPU placement plan of a profile: check it, or print a node's resources")
    plan.add_argument("plan_command", choices=["check", "resources"])
    plan.add_argument("--profile", default="cluster", help="profile name in serve_config/ or a YAML path")
    plan.add_argument("--plan", default=None, help="plan YAML (default: serve_config/plans/<profile>.yaml)")
    plan.add_argument("--node", default=None, help="resources: the node's name in the plan (default: this machine)")
    plan.add_argument(
        "--address",
        action="append",
        help="resources: the node with this address (repeatable) instead of this machine's own addresses and name",
    )
    plan.set_defaults(func=cmd_plan)

    add_media_commands(sub)
    add_audio_commands(sub)
    add_account_commands(sub)

    for name, func, text in (("ask", cmd_ask, "ask one question, answer streamed"), ("chat", cmd_chat, "talk")):
        p = sub.add_parser(name, help=text)
        if name == "ask":
            p.add_argument("question")
        p.add_argument("--target", default=os.environ.get("ALMQUIST_TARGET", DEFAULT_TARGET))
        p.add_argument("--session", default="", help="session id to continue")
        p.add_argument("--personality", default="")
        p.add_argument("--verbose", "-v", action="store_true", help="show the router's decision")
        if name == "ask":
            p.add_argument("--max-tokens", type=int, default=0)
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from almquist import runtime

    # A Ray that `almquist up` started runs in token mode: every command that joins it (status, down, kb, feeds)
    # must read the mode before it imports Ray, so a token made by `up` turns it on here too
    if "RAY_AUTH_MODE" not in os.environ and runtime.ray_auth_token_path().exists():
        os.environ["RAY_AUTH_MODE"] = "token"
    try:
        return args.func(args)
    except AlmquistError as error:  # bad input to a command: its message says what to change, no traceback
        console.print(f"[red]{escape(error.message)}[/red]")
        return 1


if __name__ == "__main__":
    sys.exit(main())
