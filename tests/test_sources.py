"""The source side of real-time ingestion: fetch (conditional GETs, errors, size limits, credentials, drop folders),
parse (RSS/Atom, JSON mappings, folder records, bad inputs), canonical URLs, and loading configs and secrets.

HTTP goes to a stdlib server on 127.0.0.1 (port 0) in a thread. It serves the fixtures of tests/fixtures/feeds with
an ETag and a Last-Modified, answers 304 to a matching conditional request, records every request's headers, and
can be switched to answer 500, to sleep past the client's timeout, or to send a huge or endless body. No network,
no Ray.
"""

from __future__ import annotations

import calendar
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from ingestion.sources.fetch import FOLDER_CONTENT_TYPE, fetch
from ingestion.sources.model import Cursor, FetchResult, ItemError, JsonMapping, SourceConfig, item_id_for
from ingestion.sources.parse import canonical_url, load_secrets, load_sources, parse, parse_time
from tests.feed_server import ENDLESS_CAP, FEEDS, LAST_MODIFIED, Server, ServerState, running_server

EXAMPLES = Path(__file__).parent.parent / "ingestion" / "sources" / "examples"


def utc(*fields: int) -> float:
    return float(calendar.timegm((*fields, 0, 0, 0)[:9]))


@pytest.fixture
def server() -> Iterator[Server]:
    with running_server() as running:
        yield running


def rss_config(url: str, **overrides: object) -> SourceConfig:
    return SourceConfig(name="test-feed", kind="rss", url=url, **overrides)


# ------------------------------------------------------------------------------------------------- fetch: HTTP


def test_conditional_get_new_then_not_modified(server: Server) -> None:
    server.state.serve("/news.rss", "bbc_news.rss", "application/rss+xml; charset=utf-8")
    config = rss_config(server.url("/news.rss"))
    body = (FEEDS / "bbc_news.rss").read_bytes()

    first = fetch(config, Cursor())
    assert first.status == "new", first.error
    assert first.http_status == 200
    assert first.body == body
    assert first.content_type == "application/rss+xml; charset=utf-8"
    assert first.cursor == Cursor(etag=ServerState.etag(body), last_modified=LAST_MODIFIED)
    assert "if-none-match" not in server.state.requests[0]["headers"]
    assert "if-modified-since" not in server.state.requests[0]["headers"]

    second = fetch(config, first.cursor)
    assert second.status == "not_modified"
    assert second.http_status == 304
    assert second.body == b""
    assert second.cursor == first.cursor  # unchanged: nothing new to persist
    sent = server.state.requests[1]["headers"]
    assert sent["if-none-match"] == first.cursor.etag
    assert sent["if-modified-since"] == LAST_MODIFIED


def test_last_modified_alone_is_sent_and_honoured(server: Server) -> None:
    server.state.serve("/news.rss", "bbc_news.rss", "application/rss+xml")
    result = fetch(rss_config(server.url("/news.rss")), Cursor(last_modified=LAST_MODIFIED))
    assert result.status == "not_modified"
    assert server.state.requests[0]["headers"]["if-modified-since"] == LAST_MODIFIED
    assert "if-none-match" not in server.state.requests[0]["headers"]


def test_changed_feed_is_new_with_a_new_cursor(server: Server) -> None:
    server.state.serve("/news.rss", "bbc_news.rss", "application/rss+xml")
    config = rss_config(server.url("/news.rss"))
    old = fetch(config, Cursor())
    server.state.serve("/news.rss", "verge.atom", "application/atom+xml")  # the feed changed since
    new = fetch(config, old.cursor)
    assert new.status == "new"
    assert new.body == (FEEDS / "verge.atom").read_bytes()
    assert new.cursor.etag == ServerState.etag(new.body) != old.cursor.etag
    assert server.state.requests[1]["headers"]["if-none-match"] == old.cursor.etag


def test_http_errors_are_results_not_exceptions(server: Server) -> None:
    url = server.url("/news.rss")
    cursor = Cursor(etag='"old"', last_modified=LAST_MODIFIED)
    missing = fetch(rss_config(url), cursor)
    assert (missing.status, missing.http_status, missing.error) == ("error", 404, f"HTTP 404 from {url}")

    server.state.mode = "500"
    failed = fetch(rss_config(url), cursor)
    assert (failed.status, failed.http_status, failed.error) == ("error", 500, f"HTTP 500 from {url}")
    assert failed.cursor == cursor  # an error never moves the cursor


def test_timeout(server: Server) -> None:
    server.state.serve("/slow.rss", "bbc_news.rss", "application/rss+xml")
    server.state.mode = "sleep"
    started = time.monotonic()
    result = fetch(rss_config(server.url("/slow.rss"), timeout_s=0.3), Cursor())
    assert time.monotonic() - started < 1.5  # the server sleeps 2 s
    assert result.status == "error"
    assert "timed out after 0.3 s" in result.error
    assert result.elapsed_s >= 0.3


def test_connection_refused() -> None:
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/feed.rss"
    result = fetch(rss_config(url, timeout_s=2), Cursor())
    assert result.status == "error"
    assert result.error.startswith(f"could not connect to {url}")


def test_body_over_the_declared_limit_is_refused(server: Server) -> None:
    server.state.mode = "huge"  # Content-Length: 50 MB
    result = fetch(rss_config(server.url("/huge"), max_body_bytes=100_000), Cursor())
    assert result.status == "error"
    assert result.error.startswith("response over 100000 bytes")
    assert result.body == b""


def test_endless_body_is_cut_off_while_streaming(server: Server) -> None:
    server.state.mode = "endless"  # no Content-Length: only reading tells the size
    started = time.monotonic()
    result = fetch(rss_config(server.url("/endless"), max_body_bytes=100_000), Cursor())
    assert result.status == "error"
    assert result.error == f"response over 100000 bytes from {server.url('/endless')}"
    assert time.monotonic() - started < 5
    # The client hung up: the server's writes failed long before it could push the whole 256 MB.
    assert server.state.endless_done.wait(5)
    assert server.state.endless_sent < ENDLESS_CAP


def test_redirects_are_followed(server: Server) -> None:
    server.state.serve("/news.rss", "bbc_news.rss", "application/rss+xml")
    server.state.redirects["/old-feed"] = "/news.rss"
    result = fetch(rss_config(server.url("/old-feed")), Cursor())
    assert result.status == "new", result.error
    assert result.body == (FEEDS / "bbc_news.rss").read_bytes()
    assert [r["path"] for r in server.state.requests] == ["/old-feed", "/news.rss"]


# ------------------------------------------------------------------------------------------------- credentials


def quote_config(url: str) -> SourceConfig:
    return SourceConfig(
        name="quotes",
        kind="json",
        category="stocks",
        url=url,
        mapping=JsonMapping(items="Global Quote", id="01. symbol", title="01. symbol"),
        headers={"Accept": "application/json"},
        credential_headers={"X-Api-Token": "ALMQ_TEST_TOKEN"},
        credential_params={"apikey": "ALMQ_TEST_KEY"},
    )


def test_credentials_from_the_environment(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    server.state.serve("/query", "alphavantage_global_quote.json", "application/json")
    monkeypatch.setenv("ALMQ_TEST_KEY", "key-from-env")
    monkeypatch.setenv("ALMQ_TEST_TOKEN", "token-from-env")
    result = fetch(quote_config(server.url("/query?function=GLOBAL_QUOTE&symbol=IBM")), Cursor())
    assert result.status == "new", result.error
    request = server.state.requests[0]
    query = parse_qs(urlsplit(request["path"]).query)
    assert query == {"function": ["GLOBAL_QUOTE"], "symbol": ["IBM"], "apikey": ["key-from-env"]}
    assert request["headers"]["x-api-token"] == "token-from-env"
    assert request["headers"]["accept"] == "application/json"


def test_credentials_from_a_secrets_file(server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    server.state.serve("/query", "alphavantage_global_quote.json", "application/json")
    monkeypatch.delenv("ALMQ_TEST_KEY", raising=False)
    monkeypatch.setenv("ALMQ_TEST_TOKEN", "token-from-env")
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text("ALMQ_TEST_KEY=key-from-file\n")
    result = fetch(quote_config(server.url("/query")), Cursor(), secrets=load_secrets(secrets_file))
    assert result.status == "new", result.error
    assert parse_qs(urlsplit(server.state.requests[0]["path"]).query)["apikey"] == ["key-from-file"]


def test_missing_credential_names_the_variable(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    server.state.serve("/query", "alphavantage_global_quote.json", "application/json")
    monkeypatch.delenv("ALMQ_TEST_KEY", raising=False)
    monkeypatch.setenv("ALMQ_TEST_TOKEN", "token-from-env")
    result = fetch(quote_config(server.url("/query")), Cursor(), secrets={})
    assert result.status == "error"
    assert "ALMQ_TEST_KEY" in result.error
    assert "token-from-env" not in result.error
    assert server.state.requests == []  # nothing is sent without the key


def test_credential_values_never_reach_the_error(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALMQ_TEST_KEY", "s3cret-key")
    monkeypatch.setenv("ALMQ_TEST_TOKEN", "s3cret-token")
    server.state.mode = "500"
    url = server.url("/query?symbol=IBM")
    result = fetch(quote_config(url), Cursor())
    assert result.error == f"HTTP 500 from {url}"
    assert "apikey=s3cret-key" in server.state.requests[0]["path"]  # it was sent, just never reported


def test_credential_headers_are_not_sent_through_a_redirect(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALMQ_TEST_KEY", "s3cret-key")
    monkeypatch.setenv("ALMQ_TEST_TOKEN", "s3cret-token")
    server.state.redirects["/query"] = "http://elsewhere.example/collect"
    result = fetch(quote_config(server.url("/query")), Cursor())
    assert result.status == "error"
    assert result.http_status == 302
    assert "redirects to http://elsewhere.example/collect: not followed" in result.error
    assert len(server.state.requests) == 1


# ------------------------------------------------------------------------------------------------- fetch: folder


def test_folder_reads_each_new_file_once(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    shutil.copy(FEEDS / "drop" / "press_releases.jsonl", drop)
    (drop / "half-written.jsonl.tmp").write_text('{"id": "x"')  # writers rename when done: not read yet
    (drop / ".hidden.jsonl").write_text('{"id": "y", "title": "hidden"}\n')
    (drop / "notes.txt").write_text("not a record file")
    config = SourceConfig(name="drop", kind="folder", path=drop)

    first = fetch(config, Cursor())
    assert first.status == "new"
    assert first.content_type == FOLDER_CONTENT_TYPE
    assert first.cursor.files == ("press_releases.jsonl",)
    assert json.loads(first.body) == [
        {"file": "press_releases.jsonl", "content": (FEEDS / "drop" / "press_releases.jsonl").read_text()}
    ]

    assert fetch(config, first.cursor).status == "not_modified"

    shutil.copy(FEEDS / "drop" / "alerts.csv", drop)
    second = fetch(config, first.cursor)
    assert second.status == "new"
    assert second.cursor.files == ("press_releases.jsonl", "alerts.csv")
    (entry,) = json.loads(second.body)
    assert entry["file"] == "alerts.csv"
    assert entry["content"].startswith("id,title,text,published")  # the spreadsheet's BOM is gone


def test_folder_oversized_file_is_reported_and_passed(tmp_path: Path) -> None:
    (tmp_path / "big.jsonl").write_text(json.dumps({"id": "1", "title": "t", "text": "x" * 5000}) + "\n")
    (tmp_path / "small.jsonl").write_text('{"id": "2", "title": "small"}\n')
    config = SourceConfig(name="drop", kind="folder", path=tmp_path, max_body_bytes=1000)
    result = fetch(config, Cursor())
    assert result.status == "new"
    assert result.cursor.files == ("big.jsonl", "small.jsonl")  # never read again, never blocking the folder
    items, errors = parse(config, result, seen_at=5.0)
    assert [item.title for item in items] == ["small"]
    assert [(e.where, e.message.startswith("file over 1000 bytes")) for e in errors] == [("big.jsonl", True)]


def test_folder_that_does_not_exist(tmp_path: Path) -> None:
    result = fetch(SourceConfig(name="drop", kind="folder", path=tmp_path / "nope"), Cursor(files=("a.csv",)))
    assert result.status == "error"
    assert "does not exist" in result.error
    assert result.cursor.files == ("a.csv",)


# ------------------------------------------------------------------------------------------------- parse: RSS/Atom


def new(fixture: str, content_type: str = "") -> FetchResult:
    return FetchResult(status="new", body=(FEEDS / fixture).read_bytes(), content_type=content_type)


EXAMPLE_CONFIGS = {config.name: config for config in load_sources(EXAMPLES)}


def test_rss_items_are_plain_text_with_times_and_canonical_urls() -> None:
    config = EXAMPLE_CONFIGS["bbc-news"]
    items, errors = parse(config, new("bbc_news.rss", "application/rss+xml"), seen_at=1234.5)
    assert errors == []
    assert [item.title for item in items] == [
        "Storm Éowyn: Thousands without power as gales hit",
        "Chancellor sets out spending plans",
        "Arsenal beat Chelsea in London derby",
        "Scientists map deep-sea currents",
    ]
    storm, budget, derby, science = items
    assert storm.text == (
        "Winds of up to 100mph battered the coast & inland areas overnight. Engineers are working to restore supplies."
    )
    assert budget.text == (
        'The Treasury says "difficult choices" lie ahead \u2013 with cuts of £2bn. '
        "Opposition parties criticised the plan."
    )
    assert derby.text == "Goals from Saka and Ødegaard secured the win."  # the <script> is gone with its content
    assert science.text == "Researchers used autonomous floats to track water movement."
    assert storm.url == "https://www.bbc.co.uk/news/articles/c4g0ne5xyz1o"  # utm_* dropped
    assert storm.published == utc(2025, 5, 5, 9, 12, 0)
    assert budget.published == utc(2025, 5, 5, 8, 45, 30)
    assert storm.item_id == item_id_for("url", "https://www.bbc.co.uk/news/articles/c4g0ne5xyz1o")
    # No link: the guid identifies it, within this source.
    assert science.url == ""
    assert science.item_id == item_id_for("bbc-news", "bbc-science-20250504-currents")
    assert {(i.source, i.category, i.seen_at, i.truncated) for i in items} == {("bbc-news", "news", 1234.5, False)}


def test_atom_items() -> None:
    items, errors = parse(EXAMPLE_CONFIGS["the-verge"], new("verge.atom", "application/atom+xml"), seen_at=1.0)
    assert errors == []
    chip, storm, roundup = items
    assert chip.title == "Apple\u2019s new chip is fast"  # an html title: &#8217; decoded, <em> dropped
    assert chip.text == "The M5 is here, and it\u2019s quick. Benchmarks & more inside."
    assert chip.published == utc(2025, 5, 5, 13, 30, 0)  # <published> (09:30-04:00), not <updated>
    assert storm.published == utc(2025, 5, 5, 8, 0, 0)  # no <published>: <updated>
    # An id-only entry: feedparser offers the tag: URI as its link, which is not an address.
    assert roundup.url == ""
    assert roundup.item_id == item_id_for("the-verge", "tag:theverge.com,2025:week-in-gadgets")


def test_item_ids_are_stable_and_shared_across_feeds() -> None:
    bbc = EXAMPLE_CONFIGS["bbc-news"]
    first, _ = parse(bbc, new("bbc_news.rss"), seen_at=1.0)
    again, _ = parse(bbc, new("bbc_news.rss"), seen_at=99.0)
    assert [i.item_id for i in first] == [i.item_id for i in again]
    assert len({i.item_id for i in first}) == 4
    # The Verge links the BBC's storm article as HTTPS://WWW.BBC.CO.UK:443/...c4g0ne5xyz1o/?utm_campaign=verge
    # &fbclid=abc123#comments; the BBC's own feed as ...c4g0ne5xyz1o?utm_source=rss&utm_medium=feed.
    verge, _ = parse(EXAMPLE_CONFIGS["the-verge"], new("verge.atom"), seen_at=1.0)
    assert verge[1].item_id == first[0].item_id
    assert verge[1].url == first[0].url
    assert verge[0].item_id not in {i.item_id for i in first}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTPS://Example.COM:443/a/b/?utm_source=x&b=2&a=1#frag", "https://example.com/a/b?a=1&b=2"),
        ("http://example.com:80/", "http://example.com"),
        ("http://example.com:8080/x?gclid=1&fbclid=2&UTM_Medium=3", "http://example.com:8080/x"),
        ("https://example.com/Path/Keeps/Case?q=A%20B", "https://example.com/Path/Keeps/Case?q=A+B"),
        ("https://example.com/search?q=&page=2", "https://example.com/search?page=2&q="),
        ("  https://example.com/x  ", "https://example.com/x"),
        ("tag:theverge.com,2025:x", "tag:theverge.com,2025:x"),
        ("/relative/path", "/relative/path"),
    ],
)
def test_canonical_url(url: str, expected: str) -> None:
    assert canonical_url(url) == expected


def test_truncated_feed_keeps_the_complete_items() -> None:
    items, errors = parse(EXAMPLE_CONFIGS["bbc-news"], new("bbc_news_truncated.rss"), seen_at=1.0)
    assert [i.title for i in items] == [
        "Storm Éowyn: Thousands without power as gales hit",
        "Chancellor sets out spending plans",
    ]
    assert [e.where for e in errors] == ["item 2"]  # the entry cut mid-title cannot be identified


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "application/rss+xml", ""])
def test_html_page_instead_of_a_feed(content_type: str) -> None:
    items, errors = parse(EXAMPLE_CONFIGS["bbc-news"], new("not_a_feed.html", content_type), seen_at=1.0)
    assert items == []
    assert len(errors) == 1
    assert errors[0].where == "document"
    assert errors[0].message.startswith("got an HTML page, not a feed")


def test_garbage_is_not_a_feed() -> None:
    result = FetchResult(status="new", body=b"\x00\x01 this is { not xml", content_type="application/xml")
    items, errors = parse(EXAMPLE_CONFIGS["bbc-news"], result, seen_at=1.0)
    assert items == []
    assert [(e.where, e.message.startswith("not a valid RSS/Atom feed:")) for e in errors] == [("document", True)]


def test_latin1_bytes_declared_utf8() -> None:
    items, errors = parse(EXAMPLE_CONFIGS["bbc-news"], new("latin1_declared_utf8.rss", "text/xml; charset=utf-8"), 1.0)
    assert errors == []
    assert [i.title for i in items] == [
        "Élections : la participation en hausse à Montréal",
        "Café et pâtisseries : la fête à Québec",
    ]
    assert items[0].text == "Les électeurs se sont déplacés en nombre, malgré la pluie. Coût estimé : 3 MEUR"
    assert items[0].published == utc(2025, 5, 5, 5, 30, 0)  # 07:30 +0200


def test_huge_item_is_truncated_and_the_rest_survive() -> None:
    items, errors = parse(EXAMPLE_CONFIGS["bbc-news"], new("huge_item.rss"), seen_at=1.0)
    assert errors == []
    full, summary = items
    source_text = "The committee heard evidence from more than forty witnesses over six weeks of hearings. " * 400
    assert len(source_text) > 20_000
    assert full.truncated
    assert 16_000 <= len(full.text) <= 20_000
    assert source_text.startswith(full.text)
    assert full.text.endswith("hearings.") or source_text[len(full.text)] == " "  # cut between words
    assert not summary.truncated
    assert summary.text == "A short summary of the report."

    small = rss_config("https://example.org/reports", max_item_chars=50)
    (cut, short), _ = parse(small, new("huge_item.rss"), seen_at=1.0)
    assert cut.truncated and len(cut.text) <= 50
    assert short.text == "A short summary of the report." and not short.truncated


def test_entry_with_neither_title_nor_text_is_an_error() -> None:
    body = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
    <item><link>https://example.org/empty</link></item>
    <item><title>Kept</title><link>https://example.org/kept</link></item></channel></rss>"""
    items, errors = parse(rss_config("https://example.org/feed"), FetchResult("new", body=body), seen_at=1.0)
    assert [i.title for i in items] == ["Kept"]
    assert errors == [ItemError("test-feed", "item 0", "no title and no text")]


def test_nothing_to_parse_without_a_new_body() -> None:
    config = EXAMPLE_CONFIGS["bbc-news"]
    assert parse(config, FetchResult("not_modified"), seen_at=1.0) == ([], [])
    assert parse(config, FetchResult("error", error="HTTP 500"), seen_at=1.0) == ([], [])


# ------------------------------------------------------------------------------------------------- parse: JSON


def test_espn_scoreboard() -> None:
    config = EXAMPLE_CONFIGS["espn-premier-league"]
    items, errors = parse(config, new("espn_scoreboard.json", "application/json"), seen_at=7.0)
    assert errors == []
    assert [i.title for i in items] == [
        "Arsenal 2-1 Chelsea",
        "Liverpool 3-3 Everton",
        "Brighton & Hove Albion 0-0 Fulham",
    ]
    arsenal = items[0]
    assert arsenal.text == "Premier League, Full Time: Arsenal 2, Chelsea 1 at Emirates Stadium."
    assert arsenal.entities == ("Arsenal", "Chelsea")
    assert arsenal.url == "https://www.espn.co.uk/football/match/_/gameId/704512/chelsea-arsenal"
    assert arsenal.published == utc(2025, 5, 4, 15, 30, 0)
    assert arsenal.item_id == item_id_for("espn-premier-league", "704512")
    assert {(i.category, i.seen_at) for i in items} == {("sports", 7.0)}


def test_record_missing_a_field_is_an_error_and_the_batch_goes_on() -> None:
    config = EXAMPLE_CONFIGS["espn-premier-league"]
    items, errors = parse(config, new("espn_scoreboard_missing_field.json"), seen_at=1.0)
    assert [i.title for i in items] == ["Arsenal 2-1 Chelsea", "Brighton & Hove Albion 0-0 Fulham"]
    assert errors == [ItemError("espn-premier-league", "item 1", "missing field 'id' (path events.1.id)")]


def test_template_field_missing_names_its_path() -> None:
    doc = {"events": [{"id": "1", "home": {"name": "A", "score": 1}, "away": {"name": "B"}}]}
    config = SourceConfig(
        name="scores",
        kind="json",
        url="https://example.org",
        mapping=JsonMapping(items="events", id="id", title="{home.name} {home.score}-{away.score} {away.name}"),
    )
    items, errors = parse(config, FetchResult("new", body=json.dumps(doc).encode()), seen_at=1.0)
    assert items == []
    assert errors == [ItemError("scores", "item 0", "missing field 'title' (path events.0.away.score)")]


def test_open_meteo_current_weather() -> None:
    config = EXAMPLE_CONFIGS["open-meteo-berlin"]
    (item,), errors = parse(config, new("open_meteo_current.json", "application/json"), seen_at=1.0)
    assert errors == []
    assert item.title == "Berlin weather: 14.3 °C, wind 11.2 km/h"
    assert "temperature 14.3 °C, wind speed 11.2 km/h" in item.text
    assert item.published == utc(2025, 5, 5, 10, 15, 0)  # a naive ISO time is UTC (the API's default GMT)
    assert item.item_id == item_id_for("open-meteo-berlin", "2025-05-05T10:15")
    assert item.category == "weather"


def test_alpha_vantage_quote_with_dotted_keys_and_format_spec() -> None:
    config = EXAMPLE_CONFIGS["alphavantage-ibm"]
    (item,), errors = parse(config, new("alphavantage_global_quote.json"), seen_at=1.0)
    assert errors == []
    assert item.title == "IBM 247.68 USD (1.2592%)"
    assert item.entities == ("IBM",)
    assert item.item_id == item_id_for("alphavantage-ibm", "IBM-2025-05-02")
    assert item.published == utc(2025, 5, 2, 0, 0, 0)
    assert "previous close 244.6000" in item.text


def test_alpha_vantage_rate_limit_note_is_a_document_error() -> None:
    items, errors = parse(EXAMPLE_CONFIGS["alphavantage-ibm"], new("alphavantage_rate_limited.json"), seen_at=1.0)
    assert items == []
    assert len(errors) == 1
    assert errors[0].where == "document"
    assert "Global Quote" in errors[0].message and "Information" in errors[0].message
    assert "rate limit" not in errors[0].message  # key names only, never the API's values


def test_json_that_is_not_json() -> None:
    config = EXAMPLE_CONFIGS["espn-premier-league"]
    (error,) = parse(config, FetchResult("new", body=b'{"events": [', content_type="application/json"), 1.0)[1]
    assert error.where == "document" and error.message.startswith("not valid JSON")
    (error,) = parse(config, new("not_a_feed.html", "text/html"), seen_at=1.0)[1]
    assert error.message.startswith("got an HTML page, not JSON")


def test_json_with_invalid_utf8_keeps_the_readable_text() -> None:
    config = SourceConfig(
        name="j", kind="json", url="https://example.org", mapping=JsonMapping(items="rows", id="id", title="title")
    )
    body = b'{"rows": [{"id": 1, "title": "caf\xe9 ok"}, {"id": 2, "title": "fine"}]}'
    items, errors = parse(config, FetchResult("new", body=body), seen_at=1.0)
    assert errors == []
    assert [i.title for i in items] == ["caf\ufffd ok", "fine"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1746432000, 1746432000.0),
        (1746432000123, 1746432000.123),  # milliseconds
        ("1746432000", 1746432000.0),
        ("2025-05-05T08:00:00Z", utc(2025, 5, 5, 8, 0, 0)),
        ("2025-05-05T10:00:00+02:00", utc(2025, 5, 5, 8, 0, 0)),
        ("2025-05-04T15:30Z", utc(2025, 5, 4, 15, 30, 0)),
        ("Mon, 05 May 2025 08:00:00 GMT", utc(2025, 5, 5, 8, 0, 0)),
        ("next Tuesday", None),
        (None, None),
        (True, None),
    ],
)
def test_parse_time(value: object, expected: float | None) -> None:
    if expected is None:
        assert parse_time(value) is None
    else:
        assert parse_time(value) == pytest.approx(expected)


# ------------------------------------------------------------------------------------------------- parse: folder


def test_folder_records_with_default_fields() -> None:
    config = SourceConfig(name="drop", kind="folder", path=FEEDS / "drop", max_item_chars=40)
    result = fetch(config, Cursor())
    items, errors = parse(config, result, seen_at=3.0)
    by_id = {i.item_id: i for i in items}
    tram = by_id[item_id_for("drop", "pr-101")]
    assert tram.title == "City opens new tram line"
    assert tram.text == "The line links the station with the"  # whitespace collapsed, cut at 40 on a word
    assert tram.truncated
    assert tram.url == "https://city.example.org/press/101"
    assert tram.entities == ("Tram Line 4", "University")
    assert tram.published == utc(2025, 5, 5, 6, 0, 0)
    assert by_id[item_id_for("drop", "pr-102")].published == 1746432000.0
    assert by_id[item_id_for("drop", "pr-105")].title == ""  # no title needed without an explicit mapping
    heat = by_id[item_id_for("drop", "q-1")]
    assert heat.text == "Temperatures above 30 °C expected, stay"
    assert heat.published == utc(2025, 5, 5, 0, 0, 0)
    assert set(by_id) == {item_id_for("drop", key) for key in ("pr-101", "pr-102", "pr-105", "q-1", "q-2")}
    assert [(e.where, e.message.split(":")[0]) for e in errors] == [
        ("alerts.csv line 4", "5 cells, header has 4"),
        ("alerts.csv line 5", "missing field 'id' (path id)"),
        ("press_releases.jsonl line 4", "not valid JSON"),
        ("press_releases.jsonl line 5", "missing field 'id' (path id)"),
    ]


def test_folder_records_with_a_mapping(tmp_path: Path) -> None:
    (tmp_path / "scores.jsonl").write_text(
        '{"match": {"id": 7, "home": "Ajax", "away": "PSV", "hs": 2, "as": 2}}\n{"match": {"id": 8}}\n'
    )
    mapping = JsonMapping(
        id="match.id", title="{match.home} {match.hs}-{match.as} {match.away}", entities=("match.home",)
    )
    config = SourceConfig(name="scores", kind="folder", category="sports", path=tmp_path, mapping=mapping)
    items, errors = parse(config, fetch(config, Cursor()), seen_at=1.0)
    assert [(i.title, i.entities, i.category) for i in items] == [("Ajax 2-2 PSV", ("Ajax",), "sports")]
    assert errors == [ItemError("scores", "scores.jsonl line 2", "missing field 'title' (path match.home)")]


# ------------------------------------------------------------------------------------------------- configs


def test_examples_load_and_parse_their_fixtures() -> None:
    configs = load_sources(EXAMPLES)
    by_name = {c.name: c for c in configs}
    assert set(by_name) == {
        "bbc-news",
        "the-verge",
        "espn-premier-league",
        "open-meteo-berlin",
        "alphavantage-ibm",
        "local-drop",
    }
    assert {c.kind for c in configs} == {"rss", "json", "folder"}
    assert by_name["alphavantage-ibm"].credential_params == {"apikey": "ALPHAVANTAGE_API_KEY"}
    drop = by_name["local-drop"].path
    assert drop is not None and drop.is_absolute() and "~" not in str(drop)
    fixtures = {
        "bbc-news": "bbc_news.rss",
        "the-verge": "verge.atom",
        "espn-premier-league": "espn_scoreboard.json",
        "open-meteo-berlin": "open_meteo_current.json",
        "alphavantage-ibm": "alphavantage_global_quote.json",
    }
    for name, fixture in fixtures.items():
        items, errors = parse(by_name[name], new(fixture), seen_at=1.0)
        assert items and not errors, name
    # One file of the folder loads on its own too.
    assert [c.name for c in load_sources(EXAMPLES / "news.yaml")] == ["bbc-news", "the-verge"]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("  - {name: scores, kind: json, url: 'https://x.org'}", "source scores: Value error, source scores: a json"),
        ("  - {name: Bad Name, kind: rss, url: 'https://x.org'}", "source Bad Name: name: String should match"),
        ("  - {name: feed, kind: rss, url: 'https://x.org', poll: 5}", "source feed: poll: Extra inputs"),
        ("  - {name: feed, kind: ftp, url: 'https://x.org'}", "source feed: kind: Input should be"),
        ("  - {kind: rss}", "source #0: "),
        ("  - {name: j, kind: json, url: 'https://x.org', mapping: {id: id, title: '{}'}}", "source j: template '{}'"),
        ("  - just a string", "source #0: expected a mapping"),
    ],
)
def test_bad_config_names_the_file_and_the_source(tmp_path: Path, source: str, expected: str) -> None:
    file = write(tmp_path / "broken.yaml", f"sources:\n{source}\n")
    with pytest.raises(ValueError) as info:
        load_sources(tmp_path)
    assert str(info.value).startswith(f"{file}: {expected}")


def test_bad_yaml_and_shapes_name_the_file(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", "sources: [\n  - {name: x\n")
    with pytest.raises(ValueError, match=f"^{bad}: not valid YAML"):
        load_sources(bad)
    no_list = write(tmp_path / "nolist.yml", "feeds: []\n")
    with pytest.raises(ValueError, match=f"^{no_list}: expected a mapping with a `sources:` list"):
        load_sources(no_list)
    with pytest.raises(FileNotFoundError):
        load_sources(tmp_path / "missing.yaml")


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    first = write(tmp_path / "a.yaml", "sources:\n  - {name: feed, kind: rss, url: 'https://a.org'}\n")
    second = write(tmp_path / "b.yaml", "sources:\n  - {name: feed, kind: rss, url: 'https://b.org'}\n")
    with pytest.raises(ValueError, match=f"^{second}: source feed: name already used in {first}"):
        load_sources(tmp_path)


def test_folder_path_is_relative_to_its_yaml(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf" / "drop.yaml", "sources:\n  - {name: d, kind: folder, path: incoming}\n")
    (config,) = load_sources(tmp_path / "conf")
    assert config.path == (tmp_path / "conf" / "incoming").resolve()


def test_load_secrets_env_and_yaml(tmp_path: Path) -> None:
    env = write(
        tmp_path / "secrets.env",
        "# keys\nexport A_KEY=\"quoted value\"\nB_KEY=plain # trailing comment\n\nC_KEY='single'\nD_KEY=a=b\n",
    )
    assert load_secrets(env) == {"A_KEY": "quoted value", "B_KEY": "plain", "C_KEY": "single", "D_KEY": "a=b"}
    yaml_file = write(tmp_path / "secrets.yaml", "A_KEY: 0123\nB_KEY: no\n")
    assert load_secrets(yaml_file) == {"A_KEY": "0123", "B_KEY": "no"}  # strings, not octal or False
    assert load_secrets(tmp_path / "absent.env") == {}
    assert load_secrets(None) == {}


def test_malformed_secrets_file_never_quotes_its_content(tmp_path: Path) -> None:
    bad = write(tmp_path / "secrets", "API_KEY: [unclosed-s3cret\n")
    with pytest.raises(ValueError) as info:
        load_secrets(bad)
    assert str(bad) in str(info.value)
    assert "s3cret" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    nested = write(tmp_path / "nested.yaml", "API_KEY:\n  inner: s3cret\n")
    with pytest.raises(ValueError, match="flat"):
        load_secrets(nested)
