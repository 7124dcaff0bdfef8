"""Knowledge stores: a graph behind `GraphStore` (ladybug embedded, Neo4j by URL, in memory) and a Qdrant vector
store.

`factory.open_graph_store(config)` picks the graph backend; every Cypher statement lives in `queries.py`, written
once in Neo4j's dialect with a ladybug variant only where its dialect differs. Writers go through one actor per
store (`actors/knowledge_store.py`), because embedded stores are single-process. Their config is
`almquist.config.knowledge`.
"""
