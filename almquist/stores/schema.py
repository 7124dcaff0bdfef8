"""The knowledge graph's schema: node labels, relationship types with their endpoint labels, and node ids.

Every node has `id` (`"{label}:{name}"`), `name`, `snapshot_id`, `snapshot_seq`; every relationship has
`snapshot_id`, `snapshot_seq`. Labels and relationship types are a closed set: a statement may only put one of
these into Cypher text (Cypher cannot take them as parameters), never a caller's string.
"""

from __future__ import annotations

# The vector store's collections beside the entity names (VectorStoreConfig.collection, "entities" by default):
NEWS_COLLECTION = "news"  # chunks of feed items and documents (payload: see ingestion/news.py)

NODE_LABELS: tuple[str, ...] = (
    "Movie",
    "Person",
    "Year",
    "Language",
    "Tag",
    "Genre",
    "Votes",
    "Rating",
    "Award",
    "Article",
    "Team",
    "Match",
    "Place",
    "Stock",
)

# relationship type -> the (source label, target label) pairs it may connect
RELATIONSHIPS: dict[str, tuple[tuple[str, str], ...]] = {
    "DIRECTED_BY": (("Movie", "Person"),),
    "WRITTEN_BY": (("Movie", "Person"),),
    "STARS": (("Movie", "Person"),),
    "RELEASED_IN": (("Movie", "Year"),),
    "IN_LANGUAGE": (("Movie", "Language"),),
    "HAS_TAG": (("Movie", "Tag"),),
    "HAS_GENRE": (("Movie", "Genre"),),
    "HAS_IMDB_VOTES": (("Movie", "Votes"),),
    "HAS_IMDB_RATING": (("Movie", "Rating"),),
    "ACTED_IN": (("Person", "Movie"),),
    "DIRECTED": (("Person", "Movie"),),
    "PRODUCED": (("Person", "Movie"),),
    "WROTE": (("Person", "Movie"),),
    "REVIEWED": (("Person", "Movie"),),
    "FOLLOWS": (("Person", "Person"),),
    "WON": (("Person", "Award"), ("Movie", "Award")),
    # real-time ingestion: an article (news item, score, forecast, quote) and what it is about
    "MENTIONS": (
        ("Article", "Person"),
        ("Article", "Movie"),
        ("Article", "Team"),
        ("Article", "Place"),
        ("Article", "Stock"),
    ),
}

# MetaQA relation name -> (relationship type, head label, tail label); the head is always the movie
METAQA_RELATIONS: dict[str, tuple[str, str, str]] = {
    "directed_by": ("DIRECTED_BY", "Movie", "Person"),
    "written_by": ("WRITTEN_BY", "Movie", "Person"),
    "starred_actors": ("STARS", "Movie", "Person"),
    "release_year": ("RELEASED_IN", "Movie", "Year"),
    "in_language": ("IN_LANGUAGE", "Movie", "Language"),
    "has_tags": ("HAS_TAG", "Movie", "Tag"),
    "has_genre": ("HAS_GENRE", "Movie", "Genre"),
    "has_imdb_votes": ("HAS_IMDB_VOTES", "Movie", "Votes"),
    "has_imdb_rating": ("HAS_IMDB_RATING", "Movie", "Rating"),
}

# Neo4j only: every entity also carries this label, so one uniqueness constraint and one name index cover them all
ENTITY_LABEL = "Entity"
# where snapshot records live in the graph (not an entity: no `name`, never counted)
SNAPSHOT_LABEL = "KnowledgeSnapshot"


def node_id(label: str, name: str) -> str:
    """The id of the node `name` with `label`: `"Movie:The Matrix"`."""
    return f"{label}:{name}"


def label_of(node_id_: str) -> str:
    """The label part of a node id."""
    return node_id_.partition(":")[0]


def name_of(node_id_: str) -> str:
    """The name part of a node id: `"Person:Tom Hanks"` -> `"Tom Hanks"`."""
    return node_id_.partition(":")[2]
