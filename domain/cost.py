"""The cost model: what a VM size costs per hour and what an evaluation is expected to cost.

Prices live in `domain/data/vm_prices.json` so that users can change them without touching code.
The file is validated when this module is imported: a broken price table must fail loudly at
start-up, not turn into a budget check that silently passes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from domain.clock import parse_time

DEFAULT_PROVISIONING_MINUTES = 15.0


class VmSizeInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    usd_per_hour: float = Field(gt=0, allow_inf_nan=False)
    vcpus: int = Field(ge=1)
    memory_gib: float = Field(gt=0, allow_inf_nan=False)
    nested_virtualization: bool


class PriceTable(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    currency: str = "USD"
    # Fraction of the on-demand price taken off for spot / low-priority capacity.
    spot_discount: float = Field(ge=0, lt=1, allow_inf_nan=False)
    recommended: str
    sizes: dict[str, VmSizeInfo] = Field(min_length=1)

    @model_validator(mode="after")
    def _recommended_is_priced(self) -> PriceTable:
        if self.recommended not in self.sizes:
            raise ValueError(f"recommended size {self.recommended!r} has no price")
        return self


def _load_price_table() -> PriceTable:
    text = resources.files("domain").joinpath("data", "vm_prices.json").read_text("utf-8")
    return PriceTable.model_validate(json.loads(text))


PRICE_TABLE: PriceTable = _load_price_table()
PRICED_VM_SIZES: tuple[str, ...] = tuple(PRICE_TABLE.sizes)
RECOMMENDED_VM_SIZE: str = PRICE_TABLE.recommended
SPOT_DISCOUNT: float = PRICE_TABLE.spot_discount


class UnknownVmSizeError(KeyError):
    def __init__(self, vm_size: str) -> None:
        super().__init__(vm_size)
        self.vm_size = vm_size

    def __str__(self) -> str:
        return f"no price for VM size {self.vm_size!r} (priced: {', '.join(PRICED_VM_SIZES)})"


def vm_size_info(vm_size: str) -> VmSizeInfo:
    try:
        return PRICE_TABLE.sizes[vm_size]
    except KeyError:
        raise UnknownVmSizeError(vm_size) from None


def hourly_price(vm_size: str, spot: bool) -> float:
    """USD per hour of one node of `vm_size`, on spot / low-priority capacity if `spot`."""
    price = vm_size_info(vm_size).usd_per_hour
    return price * (1.0 - SPOT_DISCOUNT) if spot else price


def job_cost(vm_size: str, spot: bool, seconds: float) -> float:
    """USD for one node running `seconds` (negative durations, e.g. from clock skew, cost 0)."""
    return hourly_price(vm_size, spot) * max(0.0, seconds) / 3600.0


def job_cost_so_far(job: Mapping[str, Any], now: datetime) -> float:
    """A job row's cost: settled once it ended, else its node's time from submission (the
    node is paid for while it provisions and pulls the image, too) to `now`."""
    if job.get("cost_usd") is not None:
        return float(job["cost_usd"])
    start = parse_time(job.get("submitted_at"))
    if start is None:
        return 0.0
    end = parse_time(job.get("ended_at")) or now
    return job_cost(job["vm_size"], bool(job["spot"]), (end - start).total_seconds())


def settled(job: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
    """The job row with its cost fixed, or None when it already was (settled once)."""
    if job.get("cost_usd") is not None:
        return None
    return {**job, "cost_usd": job_cost_so_far(job, now)}


def after_settlement(
    evaluation: Mapping[str, Any], cost_usd: float, reserved_usd: float
) -> dict[str, Any]:
    """The evaluation's money once a job's reservation of `reserved_usd` became its cost."""
    return {
        **evaluation,
        "spent_usd": float(evaluation.get("spent_usd", 0.0)) + cost_usd,
        "reserved_usd": max(0.0, float(evaluation.get("reserved_usd", 0.0)) - reserved_usd),
    }
