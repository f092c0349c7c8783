"""Refreshing the price table from AWS's offer files (``octctl/providers/aws/price_list.py``),
on samples in their format: what is kept, what is skipped, and that the result loads."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from octctl.providers.aws import pricing
from octctl.providers.aws.price_list import TABLE, fargate_prices, instance_prices, refreshed, render

SAMPLES = Path(__file__).parents[1] / "fixtures" / "price_list"


def sample(name: str) -> dict:
    return json.loads((SAMPLES / name).read_text())


def test_only_on_demand_linux_shared_types_of_our_families() -> None:
    assert instance_prices(sample("ec2_offer_sample.json")) == [
        {"name": "c6i.32xlarge", "vcpus": 128, "memory_mib": 262144, "arch": "x86_64", "hourly": "5.44"},
        {"name": "m7g.large", "vcpus": 2, "memory_mib": 8192, "arch": "arm64", "hourly": "0.0816"},
        {"name": "t3.nano", "vcpus": 2, "memory_mib": 512, "arch": "x86_64", "hourly": "0.0052"},
        {"name": "t4g.medium", "vcpus": 2, "memory_mib": 4096, "arch": "arm64", "hourly": "0.0336"},
    ]  # (Windows, dedicated, reserved capacity, SQL Server and r7g are skipped)


def test_fargate_prices_per_architecture() -> None:
    assert fargate_prices(sample("ecs_offer_sample.json")) == {
        "x86_64": {"vcpu_hourly": "0.04048", "gb_hourly": "0.004445"},
        "arm64": {"vcpu_hourly": "0.03238", "gb_hourly": "0.00356"},
    }
    offer = sample("ecs_offer_sample.json")
    x86_only = {k: v for k, v in offer["products"].items() if "ARM" not in v["attributes"]["usagetype"]}
    with pytest.raises(ValueError, match="no Fargate price for arm64 vcpu_hourly, arm64 gb_hourly"):
        fargate_prices({**offer, "products": x86_only})


def test_a_refreshed_table_is_dated_and_agrees_with_the_one_shipped() -> None:
    current = json.loads(TABLE.read_text())
    new = refreshed(
        current, sample("ec2_offer_sample.json"), sample("ecs_offer_sample.json"), datetime.date(2026, 12, 5)
    )
    assert new["as_of"] == "2026-12-05" and new["alb_hourly"] == current["alb_hourly"]
    assert json.loads(render(new)) == new
    shipped = {t["name"]: t for t in current["ec2"]}
    for found in new["ec2"]:  # the sample's prices are those the table holds
        assert shipped[found["name"]] == found
    assert new["fargate"] == current["fargate"]


def test_the_shipped_table_is_what_pricing_reads() -> None:
    current = json.loads(TABLE.read_text())
    assert render(current) == TABLE.read_text()  # (written by render: one type a line)
    assert current["as_of"] == pricing.PRICES_AS_OF
    assert {t.name for t in pricing.INSTANCE_TYPES} == {t["name"] for t in current["ec2"]}
    assert pricing.lookup("t4g.medium") == pricing.InstanceType(
        "t4g.medium", 2, 4096, "arm64", pricing.Decimal("0.0336")
    )
