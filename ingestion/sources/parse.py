"""From a fetched body to normalised items, and from YAML to source configs.

In: a `SourceConfig` and the `FetchResult` of one poll (see fetch.py), or a path to YAML configs / a secrets file.
Out: `parse` -> (`Item`s, `ItemError`s). One unreadable entry, record or line becomes one `ItemError` and the rest
of the batch is kept; a body that cannot be read at all becomes a single `ItemError` at "document". `parse` never
raises on bad input: feeds and APIs in the wild are malformed, mislabelled and change shape without notice.

- rss: feedparser over the bytes (it sniffs the encoding and falls back when the declared one is wrong). Titles and
  summaries come out as plain text. An entry with an http(s) link is identified by its canonical URL alone
  (`item_id_for("url", canonical_url(link))`), so one article syndicated in two feeds is one item; otherwise by
  the source name and its guid (or title).
- json: `config.mapping` (see `JsonMapping`) applied to each record of `mapping.items`. A mapped value is either a
  dotted path (`competitions.0.venue.fullName`; keys containing dots, like Alpha Vantage's "05. price", resolve
  too because the longest matching key wins) or, when it contains `{`, a template over paths
  (`"{home.name} {home.score}-{away.score}"`, with an optional format spec: `{price:.2f}`). Templates are parsed by
  `string.Formatter.parse` and filled by our own path lookup: no attribute access, no eval. `id` and `title` are
  required; the other fields are optional.
- folder: the body made by fetch.py (`[{"file", "content"} | {"file", "error"}]`); JSONL lines and CSV rows are
  records for the same mapping, or for `DEFAULT_FOLDER_MAPPING` (id, title, text, url, published, entities) when the
  source has none, in which case only `id` is required.

Every item: whitespace normalised, text cut to `max_item_chars` with `truncated=True` (a flag, not an error), an
item with neither title nor text is an `ItemError`, category from the config, `seen_at` from the caller.
"""

from __future__ import annotations

import calendar
import contextlib
import csv
import io
import json
import re
import string
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import feedparser
import yaml
from pydantic import ValidationError

from ingestion.sources.model import FetchResult, Item, ItemError, JsonMapping, SourceConfig, item_id_for

DEFAULT_FOLDER_MAPPING = JsonMapping(
    id="id", title="title", text="text", url="url", published="published", entities=("entities",)
)
_TRACKING_PARAMS = {"fbclid", "gclid"}
_DEFAULT_PORTS = {"http": 80, "https": 443}


# ---------------------------------------------------------------------------------------------------------- URLs


def canonical_url(url: str) -> str:
    """The form of `url` used as an identity: lower-case scheme and host, no default port, no fragment, no
    tracking parameters (`utm_*`, `fbclid`, `gclid`), the remaining query sorted, no trailing slash. Anything that
    is not an absolute URL comes back stripped and otherwise untouched."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # e.g. a port that is not a number: not a URL we can normalise
        return url
    if not parts.scheme or not parts.netloc:
        return url
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal: urlsplit dropped its brackets
        host = f"[{host}]"
    netloc = host
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc = f"{host}:{port}"
    if parts.username is not None:
        userinfo = parts.username + (f":{parts.password}" if parts.password is not None else "")
        netloc = f"{userinfo}@{netloc}"
    query = sorted(
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if not key.lower().startswith("utm_") and key.lower() not in _TRACKING_PARAMS
    )
    path = parts.path.rstrip("/")
    return urlunsplit((scheme, netloc, path, urlencode(query), ""))


# ---------------------------------------------------------------------------------------------------------- text


class _TextExtractor(HTMLParser):
    _SKIP = {"script", "style", "head", "noscript", "template"}
    _BLOCK = {"p", "br", "div", "li", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "figure", "blockquote"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)  # entities (&amp; &pound; &#8217;) become characters
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCK:
            self.parts.append(" ")  # "<p>a</p><p>b</p>" must read "a b", not "ab"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BLOCK:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCK:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Plain text of an HTML fragment: tags dropped (script/style content too), entities unescaped, whitespace
    collapsed."""
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    return _normalise("".join(extractor.parts))


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _cut(text: str, limit: int) -> str:
    cut = text[:limit]
    space = cut.rfind(" ")
    # End on a word when one ends near the limit; a text without spaces is cut mid-word.
    if space >= limit * 0.8:
        cut = cut[:space]
    return cut.rstrip()


def _make_item(
    config: SourceConfig,
    where: str,
    *,
    item_id: str,
    title: str,
    text: str,
    url: str,
    published: float | None,
    entities: tuple[str, ...],
    seen_at: float,
) -> Item | ItemError:
    title, text = _normalise(title), _normalise(text)
    if not title and not text:
        return ItemError(config.name, where, "no title and no text")
    truncated = False
    limit = config.max_item_chars
    if len(text) > limit:
        text, truncated = _cut(text, limit), True
    if len(title) > limit:
        title, truncated = _cut(title, limit), True
    return Item(
        source=config.name,
        category=config.category,
        item_id=item_id,
        title=title,
        text=text,
        url=url,
        published=published,
        seen_at=seen_at,
        entities=entities,
        truncated=truncated,
    )


# ---------------------------------------------------------------------------------------------------------- times


def _epoch(value: float) -> float:
    # Epoch milliseconds (JavaScript APIs) would be past the year 5000 as seconds.
    return value / 1000.0 if abs(value) > 1e11 else value


def parse_time(value: Any) -> float | None:
    """Epoch seconds (UTC) from epoch seconds or milliseconds, ISO-8601 (naive means UTC) or RFC 2822; None when
    the value is none of these (the item is kept: its freshness then starts at `seen_at`)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _epoch(float(value))
    text = str(value).strip()
    if not text:
        return None
    try:
        return _epoch(float(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


# ---------------------------------------------------------------------------------------------------------- paths


class _Missing(Exception):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def _resolve(document: Any, path: str) -> Any:
    """The value at a dotted path; list indices are numbers (`events.0.id`). Keys may themselves contain dots: at
    each object the longest run of path parts that is a key wins."""
    if not path:
        return document
    parts = path.split(".")
    current = document
    i = 0
    while i < len(parts):
        if isinstance(current, Mapping):
            for j in range(len(parts), i, -1):
                key = ".".join(parts[i:j])
                if key in current:
                    current = current[key]
                    i = j
                    break
            else:
                raise _Missing(path)
        elif isinstance(current, list) and re.fullmatch(r"-?\d+", parts[i]):
            index = int(parts[i])
            if not -len(current) <= index < len(current):
                raise _Missing(path)
            current = current[index]
            i += 1
        else:
            raise _Missing(path)
    return current


_FORMATTER = string.Formatter()


def _is_template(spec: str) -> bool:
    return "{" in spec


def check_template(spec: str) -> None:
    """Raise ValueError when a mapping value is a malformed template (checked when configs are loaded)."""
    if not _is_template(spec):
        return
    for _literal, field, format_spec, conversion in _FORMATTER.parse(spec):
        if field is None:
            continue
        if not field.strip():
            raise ValueError(f"template {spec!r}: empty {{}} (name a path inside the braces)")
        if conversion:
            raise ValueError(f"template {spec!r}: conversions like !{conversion} are not supported")
        if format_spec and "{" in format_spec:
            raise ValueError(f"template {spec!r}: nested fields in a format spec are not supported")


def _format_value(value: Any, format_spec: str) -> str:
    if value is None:
        return ""
    if format_spec:
        if isinstance(value, str):
            # APIs often send numbers as strings ("247.6800"): a numeric spec should still apply.
            with contextlib.suppress(ValueError):
                if format_spec[-1] in "eEfFgGn%":
                    value = float(value)
                elif format_spec[-1] in "dxXob":
                    value = int(value)
        return format(value, format_spec)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def _value(record: Any, spec: str) -> Any:
    """A path's raw value, or a template's rendered string. Raises _Missing naming the path that is absent."""
    if not _is_template(spec):
        return _resolve(record, spec)
    out: list[str] = []
    for literal, field, format_spec, _conversion in _FORMATTER.parse(spec):
        out.append(literal)
        if field is not None:
            out.append(_format_value(_resolve(record, field.strip()), format_spec or ""))
    return "".join(out)


# ---------------------------------------------------------------------------------------------------------- parse


def parse(config: SourceConfig, result: FetchResult, seen_at: float) -> tuple[list[Item], list[ItemError]]:
    """The items of one fetched body. Nothing to parse (status other than "new") gives ([], [])."""
    if result.status != "new":
        return [], []
    if config.kind == "rss":
        return _parse_rss(config, result, seen_at)
    if config.kind == "json":
        return _parse_json(config, result, seen_at)
    return _parse_folder(config, result, seen_at)


def _sort_into(made: Item | ItemError, items: list[Item], errors: list[ItemError]) -> None:
    if isinstance(made, Item):
        items.append(made)
    else:
        errors.append(made)


def _looks_like_html(result: FetchResult) -> bool:
    if "html" in result.content_type.lower() and "xhtml" not in result.content_type.lower():
        return True
    start = result.body[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith((b"<!doctype html", b"<html"))


def _html_error(config: SourceConfig, result: FetchResult, expected: str) -> ItemError:
    kind = result.content_type or "no content type"
    return ItemError(config.name, "document", f"got an HTML page, not {expected} ({kind}; is the URL still right?)")


def _detail_text(entry: Mapping[str, Any], key: str) -> str:
    value = entry.get(key) or ""
    kind = (entry.get(f"{key}_detail") or {}).get("type", "")
    return html_to_text(value) if "html" in kind else _normalise(value)


def _entry_body(entry: Mapping[str, Any]) -> str:
    # Atom <content> is the full text when present; RSS <description> / Atom <summary> otherwise.
    for content in entry.get("content") or ():
        value = content.get("value") or ""
        if value.strip():
            return html_to_text(value) if "html" in (content.get("type") or "") else _normalise(value)
    return _detail_text(entry, "summary")


def _parse_rss(config: SourceConfig, result: FetchResult, seen_at: float) -> tuple[list[Item], list[ItemError]]:
    # feedparser's documented contract: an untrusted string may be read as a URL or a file name; a stream never is.
    headers = {"content-location": str(config.url or "")}
    if result.content_type:
        headers["content-type"] = result.content_type
    feed = feedparser.parse(io.BytesIO(result.body), response_headers=headers)
    if not feed.entries:
        if not feed.get("version") and _looks_like_html(result):
            return [], [_html_error(config, result, "a feed")]
        if feed.bozo or not feed.get("version"):
            why = feed.get("bozo_exception") or "no RSS or Atom root element"
            return [], [ItemError(config.name, "document", f"not a valid RSS/Atom feed: {why}")]
        return [], []  # a valid feed with nothing in it right now
    items: list[Item] = []
    errors: list[ItemError] = []
    for index, entry in enumerate(feed.entries):
        where = f"item {index}"
        try:
            made = _rss_item(config, entry, where, seen_at)
        except Exception as exc:  # one odd entry must not cost the batch: report it and go on
            made = ItemError(config.name, where, f"unreadable entry: {type(exc).__name__}: {exc}")
        _sort_into(made, items, errors)
    return items, errors


def _rss_item(config: SourceConfig, entry: Mapping[str, Any], where: str, seen_at: float) -> Item | ItemError:
    title = _detail_text(entry, "title")
    text = _entry_body(entry)
    link = (entry.get("link") or "").strip()
    # feedparser copies an Atom id into `link` when there is none; a `tag:` URI is an id, not an address.
    url = canonical_url(link) if urlsplit(link).scheme.lower() in ("http", "https") else ""
    guid = (entry.get("id") or "").strip()
    if url:
        item_id = item_id_for("url", url)
    elif guid or title:
        item_id = item_id_for(config.name, guid or title)
    else:
        return ItemError(config.name, where, "no link, guid or title to identify the entry")
    moment = entry.get("published_parsed") or entry.get("updated_parsed")
    published = float(calendar.timegm(moment)) if moment else None  # feedparser's struct_time is UTC
    return _make_item(
        config,
        where,
        item_id=item_id,
        title=title,
        text=text,
        url=url,
        published=published,
        entities=(),
        seen_at=seen_at,
    )


def _load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        # Mislabelled bytes: keep what is readable rather than dropping the whole document.
        return json.loads(body.decode("utf-8", errors="replace"))


def _parse_json(config: SourceConfig, result: FetchResult, seen_at: float) -> tuple[list[Item], list[ItemError]]:
    mapping = config.mapping
    assert mapping is not None  # SourceConfig requires a mapping for json sources
    try:
        document = _load_json(result.body)
    except ValueError as exc:
        if _looks_like_html(result):
            return [], [_html_error(config, result, "JSON")]
        return [], [ItemError(config.name, "document", f"not valid JSON: {exc}")]
    try:
        records = _resolve(document, mapping.items)
    except _Missing:
        keys = ", ".join(map(str, list(document)[:10])) if isinstance(document, dict) else type(document).__name__
        # Only key names, never values: an API's error document can echo a request (and its key).
        return [], [ItemError(config.name, "document", f"no '{mapping.items}' in the document (it has: {keys})")]
    if isinstance(records, dict):
        records = [records]  # a path to one object (Alpha Vantage's "Global Quote") is a batch of one
    if not isinstance(records, list):
        where = mapping.items or "the document"
        return [], [ItemError(config.name, "document", f"'{where}' is a {type(records).__name__}, not a list")]
    prefix = f"{mapping.items}." if mapping.items else ""
    items: list[Item] = []
    errors: list[ItemError] = []
    for index, record in enumerate(records):
        made = _record_item(config, mapping, record, f"item {index}", f"{prefix}{index}.", seen_at, require_title=True)
        _sort_into(made, items, errors)
    return items, errors


class _FieldError(Exception):
    pass


def _record_item(
    config: SourceConfig,
    mapping: JsonMapping,
    record: Any,
    where: str,
    prefix: str,
    seen_at: float,
    require_title: bool,
) -> Item | ItemError:
    """One record through the mapping. `prefix` is the record's path in the document, for error messages."""
    if not isinstance(record, dict):
        return ItemError(config.name, where, f"expected an object, got {type(record).__name__}")

    def get(field: str, spec: str, required: bool) -> Any:
        if not spec:
            return None
        try:
            value = _value(record, spec)
        except _Missing as missing:
            if required:
                raise _FieldError(f"missing field '{field}' (path {prefix}{missing.path})") from None
            return None
        if required and (value is None or value == ""):
            raise _FieldError(f"field '{field}' is empty (path {prefix}{spec})")
        return value

    try:
        key = get("id", mapping.id, required=True)
        if isinstance(key, dict | list):
            raise _FieldError(f"field 'id' is not a single value (path {prefix}{mapping.id})")
        title = get("title", mapping.title, required=require_title)
        text = get("text", mapping.text, required=False)
        url = get("url", mapping.url, required=False)
        published = parse_time(get("published", mapping.published, required=False))
        entities: list[str] = []
        for spec in mapping.entities:
            value = get("entities", spec, required=False)
            for name in value if isinstance(value, list) else [value]:
                name = _normalise(_format_value(name, "")) if name is not None else ""
                if name and name not in entities:
                    entities.append(name)
        return _make_item(
            config,
            where,
            item_id=item_id_for(config.name, str(key)),
            title=_format_value(title, ""),
            text=_format_value(text, ""),
            url=canonical_url(str(url)) if url else "",
            published=published,
            entities=tuple(entities),
            seen_at=seen_at,
        )
    except _FieldError as exc:
        return ItemError(config.name, where, str(exc))
    except (ValueError, TypeError) as exc:  # e.g. a format spec that does not fit the value
        return ItemError(config.name, where, f"cannot map the record: {exc}")


def _parse_folder(config: SourceConfig, result: FetchResult, seen_at: float) -> tuple[list[Item], list[ItemError]]:
    mapping = config.mapping or DEFAULT_FOLDER_MAPPING
    require_title = config.mapping is not None
    try:
        files = json.loads(result.body)
    except ValueError as exc:
        return [], [ItemError(config.name, "document", f"not a folder body: {exc}")]
    items: list[Item] = []
    errors: list[ItemError] = []

    if not isinstance(files, list) or not all(isinstance(entry, dict) for entry in files):
        return [], [ItemError(config.name, "document", "not a folder body: expected a list of file objects")]
    for entry in files:
        name = str(entry.get("file", "?"))
        if "error" in entry:
            errors.append(ItemError(config.name, name, str(entry["error"])))
            continue
        content = str(entry.get("content", ""))
        if name.endswith(".jsonl"):
            for number, line in enumerate(content.splitlines(), start=1):
                if not line.strip():
                    continue
                where = f"{name} line {number}"
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    errors.append(ItemError(config.name, where, f"not valid JSON: {exc}"))
                    continue
                _sort_into(_record_item(config, mapping, record, where, "", seen_at, require_title), items, errors)
        elif name.endswith(".csv"):
            for where, row in _csv_rows(config, name, content, errors):
                _sort_into(_record_item(config, mapping, row, where, "", seen_at, require_title), items, errors)
        else:
            errors.append(ItemError(config.name, name, "not a .jsonl or .csv file"))
    return items, errors


def _csv_rows(config: SourceConfig, name: str, content: str, errors: list[ItemError]) -> list[tuple[str, dict]]:
    reader = csv.DictReader(io.StringIO(content, newline=""))
    rows: list[tuple[str, dict]] = []
    try:
        for row in reader:
            where = f"{name} line {reader.line_num}"
            if None in row:  # DictReader files extra cells under the key None
                width = len(reader.fieldnames or ())
                errors.append(ItemError(config.name, where, f"{width + len(row[None])} cells, header has {width}"))
                continue
            # An empty cell is an absent field: a required id must not be "".
            rows.append((where, {k: v for k, v in row.items() if v not in (None, "")}))
    except csv.Error as exc:
        # The csv module cannot resume after a broken row (e.g. a NUL byte): keep the rows before it.
        errors.append(ItemError(config.name, f"{name} line {reader.line_num}", f"unreadable CSV, rest skipped: {exc}"))
    return rows


# ---------------------------------------------------------------------------------------------------------- configs


def _describe_validation(error: ValidationError) -> str:
    parts = []
    for problem in error.errors():
        where = ".".join(str(p) for p in problem["loc"])
        parts.append(f"{where}: {problem['msg']}" if where else problem["msg"])
    return "; ".join(parts)


def load_sources(path: str | Path) -> list[SourceConfig]:
    """Source configs from one YAML file with a `sources:` list, or from every `*.yaml` / `*.yml` in a folder
    (in name order). A folder source's relative `path` is relative to the YAML file that names it; `~` expands.
    A bad file or source raises ValueError naming the file and the source; so does a name used twice."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"{path}: no such source config file or folder")
    configs: list[SourceConfig] = []
    defined_in: dict[str, Path] = {}
    for file in files:
        try:
            document = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ValueError(f"{file}: not valid YAML: {exc}") from exc
        if not isinstance(document, dict) or not isinstance(document.get("sources"), list):
            raise ValueError(f"{file}: expected a mapping with a `sources:` list")
        if unknown := set(document) - {"sources"}:
            raise ValueError(f"{file}: unknown top-level keys {sorted(unknown)} (only `sources:` is read)")
        for index, raw in enumerate(document["sources"]):
            label = str(raw.get("name")) if isinstance(raw, dict) and raw.get("name") else f"#{index}"
            if not isinstance(raw, dict):
                raise ValueError(f"{file}: source {label}: expected a mapping, got {type(raw).__name__}")
            raw = dict(raw)
            if raw.get("path") is not None:
                folder = Path(str(raw["path"])).expanduser()
                raw["path"] = folder if folder.is_absolute() else file.resolve().parent / folder
            try:
                config = SourceConfig.model_validate(raw)
                if config.mapping is not None:
                    m = config.mapping
                    for spec in (m.id, m.title, m.text, m.url, m.published, *m.entities):
                        check_template(spec)
            except ValidationError as exc:
                raise ValueError(f"{file}: source {label}: {_describe_validation(exc)}") from exc
            except ValueError as exc:
                raise ValueError(f"{file}: source {label}: {exc}") from exc
            if config.name in defined_in:
                raise ValueError(f"{file}: source {label}: name already used in {defined_in[config.name]}")
            defined_in[config.name] = file
            configs.append(config)
    return configs


_ENV_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")


def load_secrets(path: str | Path | None) -> dict[str, str]:
    """Credentials for `credential_headers` / `credential_params`, from a `KEY=value` file (`export`, quotes and
    `#` comments allowed) or a flat YAML mapping. No path, or no file there: {}. A malformed file raises ValueError
    naming the file and line but never quoting its content."""
    if path is None:
        return {}
    path = Path(path).expanduser()
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    if lines and all(_ENV_LINE.match(line) for _, line in lines):
        secrets: dict[str, str] = {}
        for _, line in lines:
            match = _ENV_LINE.match(line)
            assert match is not None
            key, value = match.group(1), match.group(2).strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            else:
                value = value.split(" #", 1)[0].strip()
            secrets[key] = value
        return secrets
    try:
        # BaseLoader: every scalar stays a string (YAML 1.1 would turn 0123 into 83 and `no` into False).
        document = yaml.load(text, Loader=yaml.BaseLoader)  # BaseLoader builds no Python objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        # `from None`: the YAML error quotes the offending text, which may be a secret.
        raise ValueError(f"{path}: not a KEY=value or YAML secrets file{line}") from None
    if document is None:
        return {}
    if not isinstance(document, dict) or any(not isinstance(v, str) for v in document.values()):
        raise ValueError(f"{path}: a secrets file must be flat KEY=value lines or a flat YAML mapping of strings")
    return {str(k): v for k, v in document.items()}
