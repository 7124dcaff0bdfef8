"""Composed Serve applications (`.bind()`): conversation (the gRPC ingress), router, graph_rag."""
