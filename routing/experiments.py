"""Experiments on the routing policy: A/B splits, canaries and shadow policies.

Pure. An arm is chosen deterministically from a hash of the job id and the
experiment name (`bucket`), so a job always lands in the same arm, on every worker.
Exploration (`routing.decision`) hashes job ids the same way, under its own salt.
"""

from __future__ import annotations

import hashlib
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ExperimentMode(str, Enum):
    SPLIT = "split"  # A/B: `share` of jobs get the treatment
    CANARY = "canary"  # the same mechanism, named for a small share trying a new policy
    SHADOW = "shadow"  # every job also gets the treatment's decision, recorded, never executed


class Experiment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    mode: ExperimentMode = ExperimentMode.SPLIT
    share: float = Field(default=0.5, ge=0, le=1)
    overrides: dict[str, Any] = Field(default_factory=dict)  # Policy fields for the treatment


def bucket(job_id: str, salt: str) -> float:
    """A number in [0, 1) fixed by the job id and a salt: an experiment's name, or (for a split
    that must be independent of every experiment's) a name no experiment can take."""
    digest = hashlib.sha256(f"{salt}:{job_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_treatment(job_id: str, experiment: Experiment) -> bool:
    if experiment.mode is ExperimentMode.SHADOW:
        return False
    return bucket(job_id, experiment.name) < experiment.share
