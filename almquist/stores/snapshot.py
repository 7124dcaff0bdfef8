"""`Snapshot`: the batch of writes everything a `GraphStore` creates is stamped with (ids for rollback, a monotonic
sequence number that pins reads)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Snapshot:
    """A batch of writes: everything it creates carries `snapshot_id` and `snapshot_seq` (monotonic)."""

    snapshot_id: str
    seq: int
    source: str
    created_unix_s: float
