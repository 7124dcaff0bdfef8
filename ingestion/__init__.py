"""Ray Data pipelines (knowledge base, feeds, media batches) and their source configs.

Empty until the knowledge and real-time issues: they add `read -> parse -> chunk -> embed (actor pool) -> upsert`
pipelines here, reusing the engines of `deployments/` (e.g. `deployments.embeddings.SentenceTransformerEngine`).
"""
