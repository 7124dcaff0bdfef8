"""Plain Ray actors: state that outlives one request (sessions, feed schedulers, store writers)."""
