"""`FeedScheduler`: polls every configured source on its interval and feeds what is new to the news pipeline.

In: `SourceConfig`s, a state folder, the knowledge config. Per poll of a source: a conditional fetch (ETag /
Last-Modified from the persisted cursor) -> parse -> the items written to the inbox (a JSONL file per batch) ->
the cursor persisted -> every inbox batch ingested (`ingestion.news.ingest_items`) and its file removed once the
batch's snapshot is committed. Out: `health()`: per source the last success, the last error, items seen and
stored, 304s, item errors, the consecutive errors and when the next poll is due.

Nothing accepted is lost and nothing is stored twice, whatever moment the process dies at: items reach the inbox
before the cursor moves past them (a crash in between refetches them, and the pipeline drops what is stored), and an
inbox batch is deleted only after its commit (a crash before re-runs it, resuming its snapshot: writes repeat as
no-ops). A source that fails backs off exponentially (poll interval x 2^errors, capped) and never holds up others.

The plain class is testable without Ray; `FeedSchedulerActor` is the Ray actor (threaded: `run` loops in the
background while `health` and `poll_once` answer).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray
from pydantic import Field

from almquist.config.base import Strict
from almquist.config.knowledge import KnowledgeConfig
from ingestion.sources.model import Cursor, FetchResult, Item, ItemError, SourceConfig

SCHEDULER_NAME = "almquist-feed-scheduler"
SCHEDULER_NAMESPACE = "almquist"


class SchedulerSettings(Strict):
    max_backoff_s: float = Field(3600.0, gt=0, description="Longest wait after repeated errors.")
    tick_s: float = Field(0.5, gt=0, description="How often the loop looks for due sources.")
    max_batch_items: int = Field(500, gt=0, description="Items per inbox batch (one snapshot each).")
    max_item_errors_kept: int = Field(5, ge=0, description="Recent item errors shown per source in health.")


@dataclass
class SourceHealth:
    name: str
    kind: str
    polls: int = 0
    last_poll: float | None = None
    last_success: float | None = None
    last_error: str = ""
    last_error_at: float | None = None
    consecutive_errors: int = 0
    not_modified: int = 0
    items_seen: int = 0
    items_stored: int = 0
    duplicates: int = 0
    item_errors: int = 0
    recent_item_errors: list[str] = field(default_factory=list)
    next_poll_at: float = 0.0


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class FeedScheduler:
    """See the module docstring. `fetch_fn`, `parse_fn` and `ingest_fn` default to the real ones (tests swap the
    clock-free parts by passing their own)."""

    def __init__(
        self,
        sources: Sequence[SourceConfig | Mapping[str, Any]],
        state_dir: str | Path,
        knowledge: KnowledgeConfig | Mapping[str, Any] | None = None,
        settings: SchedulerSettings | Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        fetch_fn: Callable[..., FetchResult] | None = None,
        parse_fn: Callable[..., tuple[list[Item], list[ItemError]]] | None = None,
        ingest_fn: Callable[..., Any] | None = None,
        autostart: bool = False,
    ) -> None:
        if fetch_fn is None:
            from ingestion.sources.fetch import fetch

            fetch_fn = fetch
        if parse_fn is None:
            from ingestion.sources.parse import parse

            parse_fn = parse

        self._sources = {s.name: s for s in (SourceConfig.model_validate(s) for s in sources)}
        if len(self._sources) != len(sources):
            raise ValueError("source names must be unique")
        self._knowledge = KnowledgeConfig.model_validate(knowledge or {})
        self._settings = SchedulerSettings.model_validate(settings or {})
        self._secrets = dict(secrets or {})
        self._fetch = fetch_fn
        self._parse = parse_fn
        self._ingest = ingest_fn
        self._state_dir = Path(state_dir)
        self._inbox = self._state_dir / "inbox"
        self._inbox.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # state and inbox; the pipeline runs under it too (one batch at a time)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._embedder: Any = None  # a warm EmbedderActor, started on the first batch
        self._cursors: dict[str, Cursor] = {}
        self._health = {name: SourceHealth(name, s.kind) for name, s in self._sources.items()}
        self._load_state()
        if autostart:  # the actor's way: a restarted actor resumes polling from the persisted state by itself
            self.start()

    # ---- state ----
    def _state_file(self) -> Path:
        return self._state_dir / "state.json"

    def _load_state(self) -> None:
        path = self._state_file()
        if not path.exists():
            return
        data = json.loads(path.read_text())
        for name, cursor in data.get("cursors", {}).items():
            if name in self._sources:
                self._cursors[name] = Cursor(cursor.get("etag"), cursor.get("last_modified"), tuple(cursor["files"]))
        for name, health in data.get("health", {}).items():
            if name in self._health:
                self._health[name] = SourceHealth(**health)

    def _save_state(self) -> None:
        data = {
            "cursors": {name: asdict(cursor) for name, cursor in self._cursors.items()},
            "health": {name: asdict(health) for name, health in self._health.items()},
        }
        _atomic_write(self._state_file(), json.dumps(data, indent=1))

    # ---- polling ----
    def poll_once(self, name: str, now: float | None = None) -> dict[str, Any]:
        """Polls one source now and ingests what it brought (and anything left in the inbox); returns its health."""
        config = self._source(name)
        health = self._health[name]
        now = time.time() if now is None else now
        try:  # outside the lock: a slow source must not hold up the others' bookkeeping
            result = self._fetch(config, self._cursors.get(name, Cursor()), secrets=self._secrets)
        except Exception as error:  # a fetch bug must not stop the scheduler: it is this source's error
            result = FetchResult(status="error", error=f"fetch failed: {error!r}")
        with self._lock:
            previous_success = health.last_success
            health.polls += 1
            health.last_poll = now
            if result.status == "error":
                self._failed(health, config, result.error, now)
                self._save_state()
                return asdict(health)
            if result.status == "not_modified":
                health.not_modified += 1
            else:
                items, errors = self._parse(config, result, now)
                items = [_appeared(item, previous_success, now) for item in items]
                health.items_seen += len(items)
                health.item_errors += len(errors)
                if errors:
                    recent = [f"{e.where}: {e.message}" for e in errors] + health.recent_item_errors
                    health.recent_item_errors = recent[: self._settings.max_item_errors_kept]
                self._to_inbox(name, items)  # before the cursor moves past them
            self._cursors[name] = result.cursor
            health.last_success, health.consecutive_errors = now, 0
            health.next_poll_at = now + config.poll_interval_s
            self._save_state()
            self.drain()
            return asdict(self._health[name])

    def _failed(self, health: SourceHealth, config: SourceConfig, error: str, now: float) -> None:
        health.last_error, health.last_error_at = error, now
        health.consecutive_errors += 1
        delay = min(config.poll_interval_s * 2**health.consecutive_errors, self._settings.max_backoff_s)
        health.next_poll_at = now + delay

    def _to_inbox(self, name: str, items: list[Item]) -> None:
        size = self._settings.max_batch_items
        for start in range(0, len(items), size):
            key = f"{name}-{time.time_ns()}-{uuid.uuid4().hex[:6]}"
            lines = "".join(json.dumps(asdict(item)) + "\n" for item in items[start : start + size])
            _atomic_write(self._inbox / f"{key}.jsonl", lines)

    def pending_batches(self) -> list[str]:
        """Inbox batches not yet committed, oldest first."""
        return sorted(path.stem for path in self._inbox.glob("*.jsonl"))

    def drain(self) -> list[dict[str, Any]]:
        """Ingests every inbox batch, oldest first; a batch that fails stays for the next drain."""
        from ingestion.news import ingest_items, item_from_dict

        reports = []
        with self._lock:
            for key in self.pending_batches():
                path = self._inbox / f"{key}.jsonl"
                items = [item_from_dict(json.loads(line)) for line in path.read_text().splitlines() if line]
                source = key.rsplit("-", 2)[0]
                try:
                    if self._ingest is not None:
                        report = self._ingest(items, self._knowledge, batch_key=key)
                    else:
                        report = ingest_items(items, self._knowledge, batch_key=key, embedder=self._warm_embedder())
                except Exception as error:
                    if source in self._health:
                        self._health[source].last_error = f"ingesting batch {key} failed: {error!r}"
                        self._health[source].last_error_at = time.time()
                    self._save_state()
                    break  # keep the order: later batches wait for this one
                # counted while the file exists: a batch committed by a scheduler that died before removing the
                # file comes back "up_to_date" with what it stored, and is counted now
                if source in self._health:
                    self._health[source].items_stored += report.stored
                    self._health[source].duplicates += report.duplicates + report.near_duplicates
                self._save_state()
                path.unlink()
                reports.append(asdict(report))
        return reports

    def _warm_embedder(self) -> Any:
        """One embedding actor kept for every batch: polls bring a few items each, and loading the model for each
        would take longer than the items (an actor that died is replaced)."""
        from ingestion.news import start_embedder

        if self._embedder is not None:
            try:
                ray.get(self._embedder.__ray_ready__.remote(), timeout=30)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                self._embedder = None
        if self._embedder is None:
            self._embedder = start_embedder(self._knowledge)
        return self._embedder

    def due(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        return [name for name, health in self._health.items() if health.next_poll_at <= now]

    # ---- the loop ----
    def start(self) -> bool:
        """Starts polling in a background thread (False if it already runs). Inbox leftovers are ingested first."""
        if self._thread is not None and self._thread.is_alive():
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="feed-scheduler", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        with contextlib.suppress(Exception):  # a failed leftover batch is retried after the next poll
            self.drain()
        while not self._stop.is_set():
            for name in self.due():
                if self._stop.is_set():
                    break
                try:
                    self.poll_once(name)
                except Exception as error:  # never let one source end the loop
                    with self._lock:
                        self._failed(self._health[name], self._sources[name], f"poll failed: {error!r}", time.time())
            self._stop.wait(self._settings.tick_s)

    def health(self) -> dict[str, dict[str, Any]]:
        """Per source health; read without the lock so it answers while a batch is being ingested."""
        return {name: asdict(health) for name, health in list(self._health.items())}

    def sources(self) -> list[str]:
        return list(self._sources)

    def _source(self, name: str) -> SourceConfig:
        if name not in self._sources:
            raise KeyError(f"unknown source {name!r}; sources: {sorted(self._sources)}")
        return self._sources[name]


def _appeared(item: Item, previous_success: float | None, now: float) -> Item:
    """When the item appeared in its feed, as well as we can tell: its publication time if that falls since the last
    successful poll (it was not there then), else this poll (older items were published before we looked)."""
    from dataclasses import replace

    published = item.published
    if published is not None and previous_success is not None and previous_success <= published <= now:
        return replace(item, seen_at=published)
    return replace(item, seen_at=now)


# Ray's typed overloads of ray.remote(...) list the task options only, not an actor's max_concurrency
FeedSchedulerActor = ray.remote(max_concurrency=4, max_restarts=-1)(FeedScheduler)  # type: ignore[call-overload]


def start_scheduler(
    sources: Sequence[SourceConfig | Mapping[str, Any]],
    state_dir: str | Path,
    knowledge: KnowledgeConfig | Mapping[str, Any] | None = None,
    **options: Any,
) -> Any:
    """The cluster's detached scheduler actor (created on first call), polling."""
    actor = FeedSchedulerActor.options(
        name=SCHEDULER_NAME, namespace=SCHEDULER_NAMESPACE, get_if_exists=True, lifetime="detached", num_cpus=0.1
    ).remote(list(sources), str(state_dir), knowledge, autostart=True, **options)
    ray.get(actor.health.remote())  # constructed (and polling)
    return actor
