"""Where models and data are: model references, the shared data sets, the cache of converted models.

Model locations are references, never hard-coded paths: a local path, a hub-style id resolved by the model
library itself on machines that have the weights, or `pkg://<module>/<path>` for weights that a Python package
ships inside it (how the `local` profile runs offline).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

PKG_SCHEME = "pkg://"


def resolve_model_ref(ref: str) -> str:
    """Turns `pkg://module/sub/path` into the file's path inside the installed package; other refs pass through."""
    if not ref.startswith(PKG_SCHEME):
        return os.path.expanduser(ref)
    module, _, rest = ref[len(PKG_SCHEME) :].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"model reference {ref!r}: the package {module!r} is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / rest
    if not path.exists():
        raise FileNotFoundError(f"model reference {ref!r}: {path} does not exist")
    return str(path)


def model_name(ref: str) -> str:
    """The name a model shows in info() and metadata: a `pkg://` reference as written, else its last path part."""
    return ref if ref.startswith(PKG_SCHEME) else ref.rstrip("/").split("/")[-1]


def data_dir() -> Path:
    """The shared data sets (MetaQA, Neo4j movies): ALMQUIST_DATA_DIR, else `shared/data` beside the checkout."""
    return Path(os.environ.get("ALMQUIST_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))


def default_cache_dir() -> Path:
    """Where converted models are cached (ALMQUIST_CACHE_DIR, else ~/.cache/almquist)."""
    return Path(os.environ.get("ALMQUIST_CACHE_DIR", Path.home() / ".cache" / "almquist"))
