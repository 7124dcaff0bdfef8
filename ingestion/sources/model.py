"""What flows through real-time ingestion: a source's configuration, what a fetch returns, and the items parsed
from it. A source is configuration, not code: `SourceConfig` names the kind, the place, the poll interval and,
for JSON APIs, a mapping from JSON fields to an item.

In: `SourceConfig` (from YAML, see ingestion/sources/examples/) and a `Cursor` (what the last fetch saw).
Out of a fetch: `FetchResult`; out of parsing it: `Item`s plus one `ItemError` per item that could not be read
(the rest of the batch goes on).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from almquist.config.base import Strict

SourceKind = Literal["rss", "json", "folder"]
Category = Literal["news", "sports", "weather", "stocks", "movies", "music"]


class JsonMapping(Strict):
    """How a JSON API's response becomes items: dotted paths (`a.b.0.c`) into the document.

    `items` selects the list of records (empty: the whole document is one record); the other paths are relative to
    a record. `title` and `text` may be format strings over fields, e.g. "{home.name} {home.score}-{away.score}".
    """

    items: str = ""
    id: str = Field(description="Path of a stable id of the record (with the source name it identifies the item).")
    title: str
    text: str = ""
    url: str = ""
    published: str = Field("", description="Path of an ISO-8601 or epoch-seconds time; empty: the fetch time.")
    entities: tuple[str, ...] = Field((), description="Paths of names the record is about (teams, tickers, cities).")


class SourceConfig(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    kind: SourceKind
    category: Category = "news"
    url: str | None = Field(None, description="rss and json: the feed or API URL.")
    path: Path | None = Field(None, description="folder: where JSONL/CSV files are dropped.")
    poll_interval_s: float = Field(60.0, gt=0)
    timeout_s: float = Field(10.0, gt=0)
    max_item_chars: int = Field(20_000, gt=0, description="Longer items are cut to this and marked truncated.")
    max_body_bytes: int = Field(10_000_000, gt=0, description="A larger response is refused.")
    mapping: JsonMapping | None = Field(None, description="json (and folder records): fields -> item.")
    headers: dict[str, str] = Field(default_factory=dict, description="Plain request headers (no secrets).")
    # Credentials are never in the config: header name -> environment variable (or secrets-file key) holding it.
    credential_headers: dict[str, str] = Field(default_factory=dict)
    credential_params: dict[str, str] = Field(default_factory=dict, description="query param -> env var.")

    @model_validator(mode="after")
    def _where(self) -> SourceConfig:
        if self.kind in ("rss", "json") and not self.url:
            raise ValueError(f"source {self.name}: a {self.kind} source needs `url`")
        if self.kind == "folder" and self.path is None:
            raise ValueError(f"source {self.name}: a folder source needs `path`")
        if self.kind == "json" and self.mapping is None:
            raise ValueError(f"source {self.name}: a json source needs `mapping`")
        return self


@dataclass(frozen=True)
class Cursor:
    """What a source's last successful fetch saw: validators for a conditional request, and for a folder the files
    already read. Persisted by the scheduler after the items of that fetch are safely in its inbox."""

    etag: str | None = None
    last_modified: str | None = None
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class FetchResult:
    """One poll of a source. `status`: "new" (a body to parse), "not_modified" (304 or no new files: no work),
    "error" (timeout, connection refused, HTTP >= 400, too large: `error` says which)."""

    status: Literal["new", "not_modified", "error"]
    body: bytes = b""
    content_type: str = ""
    http_status: int = 0
    cursor: Cursor = field(default_factory=Cursor)  # the cursor to persist once the body's items are kept
    error: str = ""
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class Item:
    """One news article, score, forecast or price, normalised. `item_id` is stable across polls and restarts."""

    source: str
    category: str
    item_id: str
    title: str
    text: str
    url: str = ""
    published: float | None = None  # epoch seconds, from the item; None when it has none
    seen_at: float = 0.0  # epoch seconds the scheduler first fetched it: freshness starts here
    entities: tuple[str, ...] = ()
    truncated: bool = False

    @property
    def content_hash(self) -> str:
        """Exact-duplicate key: the same words under another URL or id are the same item."""
        normal = " ".join(f"{self.title}\n{self.text}".lower().split())
        return hashlib.sha256(normal.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ItemError:
    """An item of a fetched body that could not be read; the others are kept."""

    source: str
    where: str  # "item 3", "line 12", "document"
    message: str


def item_id_for(source: str, key: str) -> str:
    """A stable item id from the source's own identity of the item (guid, canonical URL, record id)."""
    return hashlib.sha256(f"{source}\x00{key}".encode()).hexdigest()[:24]
