"""Neo4j's example movie graph (`movies.cypher`) into the knowledge graph, parsed, never executed.

In: the path of `movies.cypher`: Neo4j 5 Cypher made of `CREATE` statements. A small parser reads the subset that
file uses (node patterns with a label and a literal property map, relationship patterns between variables) and
turns it into our nodes and edges: a Movie is named by its `title`, a Person by its `name`, and a movie's
`released` year becomes a RELEASED_IN edge to a Year, as in MetaQA. Constraint and index statements are skipped;
anything else is reported with its line number and skipped. Out: an `IngestReport`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from almquist.config.knowledge import KnowledgeConfig
from almquist.errors import InvalidArgument, NotFound
from almquist.stores.schema import NODE_LABELS, RELATIONSHIPS
from ingestion.batches import GraphBatch, data_dir
from ingestion.pipeline import IngestReport, Source, run_pipeline

FORMAT_VERSION = "neo4j-movies-v1"
NAME_PROPERTY = {"Movie": "title", "Person": "name"}  # others use `name`

_TOKEN = re.compile(
    r"""
    (?P<space>\s+) | (?P<comment>//[^\n]*) |
    (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*") |
    (?P<number>-?\d+(?:\.\d+)?) |
    (?P<ident>[A-Za-z_]\w*|`[^`]+`) |
    (?P<arrow>->|<-) |
    (?P<punct>[()\[\]{}:,;\-.])
    """,
    re.VERBOSE,
)


def default_movies() -> Path:
    return data_dir() / "neo4j-movies" / "movies.cypher"


class CypherSubsetError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    line: int


def tokenize(text: str) -> list[Token]:
    tokens, pos, line = [], 0, 1
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise CypherSubsetError(line, f"unexpected character {text[pos]!r}")
        kind = match.lastgroup or ""
        if kind not in ("space", "comment"):
            value = match.group()
            tokens.append(Token(kind, value.strip("`") if kind == "ident" else value, line))
        line += match.group().count("\n")
        pos = match.end()
    return tokens


@dataclass
class MovieGraph:
    """What the file describes: nodes (label, name) and edges (type, source, target) with their lines."""

    nodes: dict[tuple[str, str], int] = field(default_factory=dict)
    edges: dict[tuple[str, tuple[str, str], tuple[str, str]], int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    statements: int = 0


class _Parser:
    def __init__(self, tokens: list[Token], graph: MovieGraph, source: str) -> None:
        self.tokens, self.pos, self.graph, self.source = tokens, 0, graph, source
        self.variables: dict[str, tuple[str, str]] = {}

    def parse(self) -> None:
        while self.pos < len(self.tokens):
            start = self.peek()
            try:
                self.statement()
            except CypherSubsetError as error:
                self.graph.errors.append(f"{self.source}:{error.line}: {error.args[0].split(': ', 1)[1]}")
                self.skip_statement(start)

    def statement(self) -> None:
        keyword = self.next()
        if keyword.text.upper() != "CREATE":
            raise CypherSubsetError(keyword.line, f"only CREATE statements are read, not {keyword.text!r}")
        self.graph.statements += 1
        if self.peek().kind == "ident" and self.peek().text.upper() in ("CONSTRAINT", "INDEX"):
            self.skip_statement(keyword)  # schema of the source database: ours is ensure_schema()'s
            return
        self.pattern()
        while self.accept(","):
            self.pattern()
        self.accept(";")

    def pattern(self) -> None:
        left = self.node()
        while self.peek().text in ("-", "<-"):
            incoming = self.next().text == "<-"
            self.expect("[")
            if self.peek().kind == "ident":
                self.next()
            self.expect(":")
            rel = self.next()
            if rel.kind != "ident":
                raise CypherSubsetError(rel.line, f"expected a relationship type, found {rel.text!r}")
            if self.peek().text == "{":
                self.literal_map()  # edge properties (roles, ratings) are not part of our graph
            self.expect("]")
            self.expect("-" if incoming else "->")
            right = self.node()
            src, dst = (right, left) if incoming else (left, right)
            self.add_edge(rel, src, dst)
            left = right

    def node(self) -> tuple[str, str]:
        opening = self.expect("(")
        variable = self.next().text if self.peek().kind == "ident" else None
        label = None
        if self.accept(":"):
            label = self.next().text
        props = self.literal_map() if self.peek().text == "{" else None
        self.expect(")")
        if label is None:
            if variable not in self.variables:
                raise CypherSubsetError(opening.line, f"variable {variable!r} is used before a CREATE defines it")
            return self.variables[variable]
        if label not in NODE_LABELS:
            raise CypherSubsetError(opening.line, f"label {label!r} is not in the schema ({list(NODE_LABELS)})")
        key = NAME_PROPERTY.get(label, "name")
        name = (props or {}).get(key)
        if not isinstance(name, str) or not name.strip():
            raise CypherSubsetError(opening.line, f"a {label} needs a string `{key}`")
        node = (label, name.strip())
        self.graph.nodes.setdefault(node, opening.line)
        if label == "Movie" and isinstance((props or {}).get("released"), int):
            year = ("Year", str(props["released"]))  # type: ignore[index]
            self.graph.nodes.setdefault(year, opening.line)
            self.graph.edges.setdefault(("RELEASED_IN", node, year), opening.line)
        if variable:
            self.variables[variable] = node
        return node

    def add_edge(self, rel: Token, src: tuple[str, str], dst: tuple[str, str]) -> None:
        pairs = RELATIONSHIPS.get(rel.text)
        if pairs is None or (src[0], dst[0]) not in pairs:
            raise CypherSubsetError(rel.line, f"{src[0]}-[:{rel.text}]->{dst[0]} is not in the schema")
        self.graph.edges.setdefault((rel.text, src, dst), rel.line)

    def literal_map(self) -> dict[str, Any]:
        self.expect("{")
        values: dict[str, Any] = {}
        while not self.accept("}"):
            key = self.next()
            if key.kind != "ident":
                raise CypherSubsetError(key.line, f"expected a property name, found {key.text!r}")
            self.expect(":")
            values[key.text] = self.literal()
            if not self.accept(","):
                self.expect("}")
                break
        return values

    def literal(self) -> Any:
        token = self.next()
        if token.kind == "string":
            return re.sub(r"\\(.)", r"\1", token.text[1:-1])
        if token.kind == "number":
            return float(token.text) if "." in token.text else int(token.text)
        if token.text == "[":
            items: list[Any] = []
            while not self.accept("]"):
                items.append(self.literal())
                if not self.accept(","):
                    self.expect("]")
                    break
            return items
        if token.kind == "ident" and token.text.lower() in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[token.text.lower()]
        raise CypherSubsetError(token.line, f"only literal property values are read, not {token.text!r}")

    # ---- token helpers ----
    def peek(self) -> Token:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else Token("end", "", self.tokens[-1].line)

    def next(self) -> Token:
        token = self.peek()
        if token.kind == "end":
            raise CypherSubsetError(token.line, "unexpected end of file")
        self.pos += 1
        return token

    def accept(self, text: str) -> bool:
        if self.peek().text == text:
            self.pos += 1
            return True
        return False

    def expect(self, text: str) -> Token:
        token = self.next()
        if token.text != text:
            raise CypherSubsetError(token.line, f"expected {text!r}, found {token.text!r}")
        return token

    def skip_statement(self, start: Token) -> None:
        """Moves past the statement that began at `start`: to the next top-level CREATE or after a `;`."""
        if self.pos < len(self.tokens) and self.tokens[self.pos] is start:
            self.pos += 1
        while self.pos < len(self.tokens):
            token = self.tokens[self.pos]
            if token.text == ";":
                self.pos += 1
                return
            if token.kind == "ident" and token.text.upper() == "CREATE":
                return
            self.pos += 1


def parse_movies(text: str, source: str = "movies.cypher") -> MovieGraph:
    graph = MovieGraph()
    try:
        tokens = tokenize(text)
    except CypherSubsetError as error:
        graph.errors.append(f"{source}:{error.line}: {error.args[0].split(': ', 1)[1]}")
        return graph
    if tokens:
        _Parser(tokens, graph, source).parse()
    return graph


def to_batches(graph: MovieGraph, batch_size: int) -> list[GraphBatch]:
    """Edges in chunks of `batch_size` (each batch holds its edges' nodes); every node and error in batch 0."""
    edges = list(graph.edges)
    batches = [GraphBatch(i) for i in range(max(1, -(-len(edges) // batch_size)))]
    for label, name in graph.nodes:
        batches[0].add_node(label, name)
    batches[0].errors.extend(graph.errors)
    for i, (rel, (src_label, src_name), (dst_label, dst_name)) in enumerate(edges):
        batches[i // batch_size].add_edge(rel, src_label, src_name, dst_label, dst_name)
    for batch in batches:
        batch.lines = sum(len(rows) for rows in batch.edges.values()) + (len(graph.nodes) if batch.batch == 0 else 0)
    return batches


def _identity(batch: GraphBatch) -> GraphBatch:
    return batch


def movies_source(path: Path, batch_size: int) -> Source:
    path = Path(path).resolve()
    if not path.is_file():
        raise NotFound(f"no movies graph at {path}; pass the path of movies.cypher")
    data = path.read_bytes()
    fingerprint = hashlib.sha256(f"{FORMAT_VERSION}|{batch_size}|".encode() + data).hexdigest()
    batches = to_batches(parse_movies(data.decode("utf-8"), path.name), batch_size)
    return Source(f"neo4j-movies:{path}", fingerprint, batches, _identity, [b.lines for b in batches], unit="item")


def ingest_movies(
    path: Path | str | None = None,
    config: KnowledgeConfig | None = None,
    *,
    batch_size: int | None = None,
    **options: Any,
) -> IngestReport:
    """Ingests movies.cypher; `options` go to `pipeline.run_pipeline`."""
    config = config or KnowledgeConfig()
    if batch_size is not None and batch_size <= 0:
        raise InvalidArgument(f"batch_size must be positive, not {batch_size}")
    return run_pipeline(
        movies_source(Path(path or default_movies()), batch_size or config.batch_size), config, **options
    )
