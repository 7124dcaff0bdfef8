"""The public gRPC API: `.proto` files under `protos/almquist/v1/`.

Python stubs are generated from them into the `almquist.v1` package by `python -m protos.build` (grpcio-tools);
the proto package `almquist.v1` and the Python package `almquist.v1` are the same name on purpose, so the
generated `from almquist.v1 import ..._pb2` imports resolve without rewriting.
"""
