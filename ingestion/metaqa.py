"""MetaQA's knowledge base (`head|relation|tail`, one triple per line) into the movie graph and entity vectors.

In: the path of `kb.txt`. The driver only finds the byte offsets of each batch of `batch_size` lines (and hashes
them: the fingerprint a resumed run must match); Ray tasks read and parse the batches. A malformed line is reported
as `kb.txt:LINE: what is wrong` and skipped; the rest of its batch goes on. Out: an `IngestReport`.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from almquist.config.knowledge import KnowledgeConfig
from almquist.errors import InvalidArgument, NotFound
from almquist.stores.schema import METAQA_RELATIONS
from ingestion.batches import GraphBatch, data_dir
from ingestion.pipeline import IngestReport, Source, run_pipeline

FORMAT_VERSION = "metaqa-v1"  # part of the fingerprint: bump it when parsing changes what a line becomes


def default_kb() -> Path:
    return data_dir() / "metaqa" / "kb.txt"


@dataclass(frozen=True)
class LineRange:
    """Batch `batch`: `lines` lines from byte `offset` (`length` bytes), the first being line `first_line`."""

    path: str
    batch: int
    first_line: int
    offset: int
    length: int
    lines: int


def plan_batches(path: Path, batch_size: int, limit: int | None = None) -> tuple[list[LineRange], str]:
    """The batches covering the first `limit` lines (all if None), and the fingerprint of those lines."""
    digest = hashlib.sha256(f"{FORMAT_VERSION}|{batch_size}|".encode())
    ranges: list[LineRange] = []
    start_offset = offset = count = 0
    with open(path, "rb") as f:
        for raw in f:
            if limit is not None and count >= limit:
                break
            digest.update(raw)
            count += 1
            offset += len(raw)
            if count % batch_size == 0:
                ranges.append(
                    LineRange(
                        str(path), len(ranges), count - batch_size + 1, start_offset, offset - start_offset, batch_size
                    )
                )
                start_offset = offset
    if offset > start_offset:
        lines = count - len(ranges) * batch_size
        ranges.append(LineRange(str(path), len(ranges), count - lines + 1, start_offset, offset - start_offset, lines))
    return ranges, digest.hexdigest()


def parse_line(text: str) -> tuple[str, str, str] | str:
    """A `(head, relation, tail)` triple, or a message saying what is wrong with the line."""
    fields = text.split("|")
    if len(fields) != 3:
        return f"expected head|relation|tail (3 fields), found {len(fields)}"
    head, relation, tail = (f.strip() for f in fields)
    if relation not in METAQA_RELATIONS:
        return f"unknown relation {relation!r}; MetaQA's are {sorted(METAQA_RELATIONS)}"
    if not head or not tail:
        return "empty head or tail"
    return head, relation, tail


def parse_lines(data: bytes, batch: int, first_line: int, source: str) -> GraphBatch:
    """The graph of some lines of kb.txt; blank lines are skipped, malformed ones reported with their number."""
    out = GraphBatch(batch)
    for number, raw in enumerate(io.BytesIO(data), start=first_line):
        out.lines += 1
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as error:
            out.errors.append(f"{source}:{number}: not UTF-8 ({error.reason} at byte {error.start})")
            continue
        if not text.strip():
            continue
        parsed = parse_line(text)
        if isinstance(parsed, str):
            out.errors.append(f"{source}:{number}: {parsed}: {text[:120]!r}")
            continue
        head, relation, tail = parsed
        rel, head_label, tail_label = METAQA_RELATIONS[relation]
        out.add_edge(rel, head_label, head, tail_label, tail)
    return out


def load_range(spec: LineRange) -> GraphBatch:
    with open(spec.path, "rb") as f:
        f.seek(spec.offset)
        data = f.read(spec.length)
    return parse_lines(data, spec.batch, spec.first_line, Path(spec.path).name)


def metaqa_source(path: Path, batch_size: int, limit: int | None = None) -> Source:
    path = Path(path).resolve()
    if not path.is_file():
        raise NotFound(f"no MetaQA knowledge base at {path}; pass the path of kb.txt")
    ranges, fingerprint = plan_batches(path, batch_size, limit)
    return Source(f"metaqa:{path}", fingerprint, ranges, load_range, [r.lines for r in ranges], unit="line")


def ingest_metaqa(
    path: Path | str | None = None,
    config: KnowledgeConfig | None = None,
    *,
    limit: int | None = None,
    batch_size: int | None = None,
    **options: Any,
) -> IngestReport:
    """Ingests kb.txt (the first `limit` lines if given); `options` go to `pipeline.run_pipeline`."""
    config = config or KnowledgeConfig()
    if limit is not None and limit <= 0:
        raise InvalidArgument(f"limit must be positive (or None for the whole file), not {limit}")
    source = metaqa_source(Path(path or default_kb()), batch_size or config.batch_size, limit)
    return run_pipeline(source, config, **options)
