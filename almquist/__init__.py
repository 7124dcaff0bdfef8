"""Almquist's shared runtime: typed config and profiles, errors mapped to gRPC status, the gRPC client, the CLI.

Nothing here imports `deployments/` or `graphs/`: the layers point down (see shared ARCHITECTURE.md).
"""

__version__ = "0.1.0"
