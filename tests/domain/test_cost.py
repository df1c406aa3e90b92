from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from domain.cost import (
    PRICED_VM_SIZES,
    RECOMMENDED_VM_SIZE,
    SPOT_DISCOUNT,
    PriceTable,
    UnknownVmSizeError,
    after_settlement,
    hourly_price,
    job_cost,
    job_cost_so_far,
    settled,
)

PRICES = {
    "Standard_D2_v3": 0.096,
    "Standard_D4_v3": 0.192,
    "Standard_D8_v3": 0.384,
    "Standard_E2s_v3": 0.126,
    "Standard_D4s_v5": 0.208,
}


def test_price_table() -> None:
    assert set(PRICED_VM_SIZES) == set(PRICES)
    assert RECOMMENDED_VM_SIZE == "Standard_D4s_v5"
    for size, price in PRICES.items():
        assert hourly_price(size, spot=False) == pytest.approx(price)


def test_spot_discount_is_in_documented_range() -> None:
    assert 0.6 <= SPOT_DISCOUNT <= 0.9
    for size, price in PRICES.items():
        assert hourly_price(size, spot=True) == pytest.approx(price * (1 - SPOT_DISCOUNT))


def test_unknown_size() -> None:
    with pytest.raises(UnknownVmSizeError, match="Standard_NC24"):
        hourly_price("Standard_NC24", spot=False)


def test_job_cost() -> None:
    assert job_cost("Standard_D4s_v5", False, 3600) == pytest.approx(0.208)
    assert job_cost("Standard_D4s_v5", False, 1800) == pytest.approx(0.104)
    assert job_cost("Standard_D2_v3", True, 7200) == pytest.approx(2 * 0.096 * (1 - SPOT_DISCOUNT))
    assert job_cost("Standard_D2_v3", False, 0) == 0.0
    assert job_cost("Standard_D2_v3", False, -10) == 0.0


def test_shipped_price_file_validates_and_bad_tables_are_rejected() -> None:
    path = Path(__file__).resolve().parents[2] / "domain" / "data" / "vm_prices.json"
    data = json.loads(path.read_text())
    assert PriceTable.model_validate(data).sizes.keys() == PRICES.keys()
    broken = {**data, "recommended": "Standard_Missing"}
    with pytest.raises(ValueError, match="recommended"):
        PriceTable.model_validate(broken)
    with pytest.raises(ValueError):
        PriceTable.model_validate({**data, "spot_discount": 1.5})


T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
RUNNING_JOB = {
    "vm_size": "Standard_D4s_v5",
    "spot": False,
    "submitted_at": T0.isoformat(),
    "reserved_usd": 0.5,
}


def test_job_cost_so_far_runs_from_submission_to_now_or_the_end() -> None:
    at = T0 + timedelta(minutes=30)
    assert job_cost_so_far(RUNNING_JOB, at) == pytest.approx(0.104)
    ended = {**RUNNING_JOB, "ended_at": (T0 + timedelta(hours=1)).isoformat()}
    assert job_cost_so_far(ended, T0 + timedelta(hours=5)) == pytest.approx(0.208)
    assert job_cost_so_far({**RUNNING_JOB, "cost_usd": 1.25}, at) == 1.25
    assert job_cost_so_far({**RUNNING_JOB, "submitted_at": None}, at) == 0.0


def test_a_job_settles_once_and_its_reservation_becomes_spend() -> None:
    done = settled(RUNNING_JOB, T0 + timedelta(hours=1))
    assert done is not None and done["cost_usd"] == pytest.approx(0.208)
    assert settled(done, T0 + timedelta(hours=2)) is None
    evaluation = {"spent_usd": 1.0, "reserved_usd": 0.75}
    after = after_settlement(evaluation, done["cost_usd"], 0.5)
    assert after["spent_usd"] == pytest.approx(1.208)
    assert after["reserved_usd"] == pytest.approx(0.25)
    # A reservation released twice never goes below zero.
    assert after_settlement({}, 0.1, 0.5)["reserved_usd"] == 0.0
