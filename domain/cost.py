"""The cost model: what a VM size costs per hour and what an evaluation is expected to cost.

Prices live in `domain/data/vm_prices.json` so that users can change them without touching code.
The file is validated when this module is imported: a broken price table must fail loudly at
start-up, not turn into a budget check that silently passes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from domain.planning import ShardPlan

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


class CostEstimate(BaseModel):
    model_config = ConfigDict(frozen=True)

    total_usd: float
    per_task_usd: float
    makespan_minutes: float


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


def estimate_evaluation(
    plan: Sequence[ShardPlan],
    vm_size: str,
    spot: bool,
    provisioning_minutes: float = DEFAULT_PROVISIONING_MINUTES,
) -> CostEstimate:
    """Expected cost and makespan of running `plan` once with no failures.

    Every shard pays for its own node from provisioning (allocation, image pull, boot) to its
    last task; shards run in parallel, so the makespan is provisioning plus the longest shard.
    Each shard is priced at its own (possibly right-sized) size; `vm_size` prices shards that
    carry no size.
    """
    if provisioning_minutes < 0:
        raise ValueError("provisioning_minutes must not be negative")
    total = 0.0
    longest = 0.0
    tasks = 0
    for shard in plan:
        minutes = provisioning_minutes + shard.expected_minutes
        total += job_cost(shard.vm_size or vm_size, spot, minutes * 60.0)
        longest = max(longest, shard.expected_minutes)
        tasks += len(shard.task_ids)
    return CostEstimate(
        total_usd=total,
        per_task_usd=total / tasks if tasks else 0.0,
        makespan_minutes=provisioning_minutes + longest if plan else 0.0,
    )
