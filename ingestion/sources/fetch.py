"""One poll of one source: the network (or the drop folder) side of ingestion, with nothing parsed yet.

In: a `SourceConfig`, the source's last `Cursor`, optionally a shared `httpx.Client` and a secrets mapping (from
`parse.load_secrets`). Out: a `FetchResult` (see model.py):

- rss / json: a conditional GET (`If-None-Match` from `cursor.etag`, `If-Modified-Since` from
  `cursor.last_modified`). 304 -> "not_modified" with the cursor unchanged; 2xx -> "new" with the body, its content
  type and a cursor made of the response's `ETag` / `Last-Modified`; timeouts, refused connections, HTTP >= 400 and
  bodies over `max_body_bytes` -> "error" whose `error` says which. The body is streamed and reading stops as soon
  as it passes the limit, so a huge or endless response never sits in memory.
- folder: the `*.jsonl` / `*.csv` files in `path` whose names are not in `cursor.files`, read as one "new" body:
  `FOLDER_CONTENT_TYPE`, a UTF-8 JSON list in name order of `{"file": name, "content": text}`, or
  `{"file": name, "error": message}` for a file that could not be read (too large, unreadable) so that parsing
  reports it as an `ItemError` instead of the folder being stuck on it; the new cursor lists those files too. None
  new -> "not_modified". Writers should drop files atomically (write `x.jsonl.tmp` or `.x.jsonl`, then rename):
  other names and dot-files are never read.

`fetch` never raises for network or file-system trouble: a scheduler polls many sources and one bad source must not
stop the others. Credentials (`credential_headers` / `credential_params`: header or query param -> variable name)
come from `secrets` first, then the environment; their values never appear in an error message, and a source with
credential headers never follows a redirect (the headers would go wherever it points).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import httpx

from ingestion.sources.model import Cursor, FetchResult, SourceConfig

USER_AGENT = "Almquist-ingestion/1.0 (+https://github.com/almquist)"
FOLDER_CONTENT_TYPE = "application/vnd.almquist.folder+json"
FOLDER_SUFFIXES = (".jsonl", ".csv")


class _MissingCredential(Exception):
    pass


def fetch(
    config: SourceConfig,
    cursor: Cursor,
    client: httpx.Client | None = None,
    secrets: Mapping[str, str] | None = None,
) -> FetchResult:
    """Poll `config` once. `client` is reused when given (connection pooling across polls); otherwise a client is
    made for this call and closed after it."""
    started = time.monotonic()
    if config.kind == "folder":
        result = _fetch_folder(config, cursor)
    elif client is not None:
        result = _fetch_http(config, cursor, client, secrets or {})
    else:
        with httpx.Client() as own:
            result = _fetch_http(config, cursor, own, secrets or {})
    return replace(result, elapsed_s=time.monotonic() - started)


def _credential(variable: str, secrets: Mapping[str, str]) -> str:
    value = secrets.get(variable) or os.environ.get(variable)
    if not value:
        raise _MissingCredential(variable)
    return value


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _redact(message: str, secret_values: list[str]) -> str:
    # httpx messages rarely carry the URL, but a proxy or transport error might: never let a key reach a log.
    for value in secret_values:
        message = message.replace(value, "***")
    return message


def _fetch_http(config: SourceConfig, cursor: Cursor, client: httpx.Client, secrets: Mapping[str, str]) -> FetchResult:
    url = str(config.url)
    headers = {"User-Agent": USER_AGENT, **config.headers}
    params: dict[str, str] = {}
    try:
        for header, variable in config.credential_headers.items():
            headers[header] = _credential(variable, secrets)
        for param, variable in config.credential_params.items():
            params[param] = _credential(variable, secrets)
    except _MissingCredential as missing:
        return FetchResult(
            status="error",
            cursor=cursor,
            error=f"missing credential: environment variable {missing.args[0]} is not set (nor in the secrets file)",
        )
    secret_values = [v for v in (*(headers[h] for h in config.credential_headers), *params.values()) if v]
    if cursor.etag:
        headers["If-None-Match"] = cursor.etag
    if cursor.last_modified:
        headers["If-Modified-Since"] = cursor.last_modified

    def error(message: str, http_status: int = 0) -> FetchResult:
        return FetchResult(
            status="error", http_status=http_status, cursor=cursor, error=_redact(message, secret_values)
        )

    # Error messages name config.url, never the request URL: that one carries the credential params.
    deadline = time.monotonic() + config.timeout_s
    try:
        # Merged by hand: httpx's `params=` replaces a query the configured URL already has (?symbol=IBM).
        request_url = httpx.URL(url).copy_merge_params(params) if params else httpx.URL(url)
        with client.stream(
            "GET",
            request_url,
            headers=headers,
            timeout=httpx.Timeout(config.timeout_s),
            # httpx drops Authorization on a cross-host redirect but forwards any other header: a credential header
            # could end up at whatever host a redirect names. Such sources must name their final URL.
            follow_redirects=not config.credential_headers,
        ) as response:
            status = response.status_code
            if status == 304:
                return FetchResult(status="not_modified", http_status=304, cursor=cursor)
            if response.is_redirect:
                where = response.headers.get("Location", "?")
                return error(
                    f"HTTP {status} from {url} redirects to {where}: not followed for a source with credential "
                    "headers (configure the final URL)",
                    status,
                )
            if status >= 400:
                return error(f"HTTP {status} from {url}", status)
            if not 200 <= status < 300:
                return error(f"unexpected HTTP {status} from {url}", status)
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > config.max_body_bytes:
                return error(f"response over {config.max_body_bytes} bytes ({declared} declared) from {url}", status)
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > config.max_body_bytes:
                    # Leaving the `with` closes the connection: the rest of the body is never read.
                    return error(f"response over {config.max_body_bytes} bytes from {url}", status)
                chunks.append(chunk)
                # httpx's timeout is per read; a server dripping bytes would never trip it, a deadline does.
                if time.monotonic() > deadline:
                    return error(f"timed out after {config.timeout_s:g} s reading the body from {url}", status)
            return FetchResult(
                status="new",
                body=b"".join(chunks),
                content_type=response.headers.get("Content-Type", ""),
                http_status=status,
                cursor=Cursor(
                    etag=response.headers.get("ETag"),
                    last_modified=response.headers.get("Last-Modified"),
                ),
            )
    except httpx.TimeoutException:
        return error(f"timed out after {config.timeout_s:g} s fetching {url}")
    except httpx.ConnectError as exc:
        return error(f"could not connect to {url}: {_describe(exc)}")
    except httpx.TooManyRedirects:
        return error(f"too many redirects from {url}")
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
        return error(f"request to {url} failed: {_describe(exc)}")
    except OSError as exc:  # e.g. a socket error surfacing outside httpx's own exception mapping
        return error(f"request to {url} failed: {_describe(exc)}")


def _fetch_folder(config: SourceConfig, cursor: Cursor) -> FetchResult:
    folder = Path(str(config.path)).expanduser()
    try:
        names = sorted(
            p.name
            for p in folder.iterdir()
            if p.suffix in FOLDER_SUFFIXES and not p.name.startswith(".") and p.is_file()
        )
    except FileNotFoundError:
        return FetchResult(status="error", cursor=cursor, error=f"folder {folder} does not exist")
    except OSError as exc:
        return FetchResult(status="error", cursor=cursor, error=f"cannot list folder {folder}: {exc}")
    seen = set(cursor.files)
    new = [name for name in names if name not in seen]
    if not new:
        return FetchResult(status="not_modified", cursor=cursor)
    files: list[dict[str, str]] = []
    budget = config.max_body_bytes
    taken: list[str] = []
    for name in new:
        path = folder / name
        try:
            size = path.stat().st_size
            if size > config.max_body_bytes:
                files.append({"file": name, "error": f"file over {config.max_body_bytes} bytes ({size}): skipped"})
            elif size > budget and taken:
                # This poll is full: the file waits for the next one (it is not in the cursor yet).
                continue
            else:
                # utf-8-sig: spreadsheets write a BOM in front of CSV headers; undecodable bytes become U+FFFD.
                files.append({"file": name, "content": path.read_bytes().decode("utf-8-sig", errors="replace")})
                budget -= size
        except OSError as exc:
            files.append({"file": name, "error": f"cannot read: {exc}"})
        taken.append(name)
    body = json.dumps(files, ensure_ascii=False).encode()
    return FetchResult(
        status="new",
        body=body,
        content_type=FOLDER_CONTENT_TYPE,
        cursor=Cursor(etag=cursor.etag, last_modified=cursor.last_modified, files=(*cursor.files, *taken)),
    )
