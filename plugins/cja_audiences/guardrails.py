"""Guardrails: Adobe's hard limits and our own safety checks, applied before anything is sent.

(First cut: the per-audience overrides model that specs embed. The checks build on it.)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AudienceGuardrails(BaseModel):
    """Per-audience tightening of the defaults; a hard limit can never be loosened."""

    model_config = ConfigDict(extra="forbid")

    min_size: int | None = Field(None, ge=0, description="privacy floor: block below this size")
    max_size: int | None = Field(None, ge=1, description="block above this size (<= 20,000,000)")
    max_change_pct: float | None = Field(
        None, gt=0, description="block when entered+exited exceeds this % of the previous size"
    )
    max_exits: int | None = Field(None, ge=0, description="block when more members exit")
    allow_empty: bool = False
