"""The one base of every typed config model: unknown keys are errors (a typo never passes silently) and a loaded
config is immutable."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
