"""Refresh ``prices.json`` (the table ``pricing.py`` reads) from AWS's public price list files.

AWS publishes every service's prices as "offer files" anyone may download, no account needed:
``https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/<service>/current/<region>/index.json``.
The EC2 one is large (hundreds of MB): this reads it once, keeps the on-demand hourly price of
each type of oct's families (Linux, shared tenancy, no pre-installed software) and the size AWS
lists for it, reads Fargate's per-vCPU and per-GB hours (x86 and ARM) from the ECS one, and
writes the table with today's date. Run it with ``make prices`` when online; the parsing is
tested offline on a saved sample (``tests/fixtures/price_list/``).

Load balancer, public IPv4 and gp3 prices are in other offers and change rarely: they are kept
from the current table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["OFFER_URL", "TABLE", "fargate_prices", "instance_prices", "refreshed", "render"]

TABLE = Path(__file__).with_name("prices.json")
OFFER_URL = "https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/{service}/current/{region}/index.json"
#: The families oct picks from (``pricing.FAMILIES``), and the architecture of each.
ARCHES = {"t3": "x86_64", "t4g": "arm64", "m6i": "x86_64", "m7g": "arm64", "c6i": "x86_64", "c7g": "arm64"}
#: Price list usage types carry a region prefix (USE1-, USW2-, ...) before these.
FARGATE_USAGE = {
    ("x86_64", "vcpu_hourly"): "Fargate-vCPU-Hours:perCPU",
    ("x86_64", "gb_hourly"): "Fargate-GB-Hours",
    ("arm64", "vcpu_hourly"): "Fargate-ARM-vCPU-Hours:perCPU",
    ("arm64", "gb_hourly"): "Fargate-ARM-GB-Hours",
}


def _on_demand_usd(offer: Mapping[str, Any], sku: str) -> str | None:
    """The one hourly USD price of ``sku``'s on-demand term (None when it has none, or several)."""
    terms = offer.get("terms", {}).get("OnDemand", {}).get(sku, {})
    prices = [
        dimension["pricePerUnit"].get("USD")
        for term in terms.values()
        for dimension in term.get("priceDimensions", {}).values()
    ]
    return prices[0] if len(prices) == 1 else None


def _memory_mib(text: str) -> int:
    """``"4 GiB"`` -> 4096 (the price list writes memory in GiB, sometimes with a comma)."""
    found = re.fullmatch(r"([\d,.]+) GiB", text.strip())
    if found is None:
        raise ValueError(f"unexpected memory {text!r}")
    return round(float(found[1].replace(",", "")) * 1024)


def instance_prices(
    offer: Mapping[str, Any], families: Iterable[str] = tuple(ARCHES)
) -> list[dict[str, Any]]:
    """Every type of ``families`` in an AmazonEC2 offer file: on-demand Linux, shared tenancy."""
    wanted = set(families)
    found: dict[str, dict[str, Any]] = {}
    for sku, product in offer.get("products", {}).items():
        a = product.get("attributes", {})
        name = a.get("instanceType", "")
        if (
            name.split(".")[0] not in wanted
            or a.get("operatingSystem") != "Linux"
            or a.get("tenancy") != "Shared"
            or a.get("preInstalledSw") != "NA"
            or a.get("capacitystatus") != "Used"
            or a.get("licenseModel", "No License required") != "No License required"
        ):
            continue
        price = _on_demand_usd(offer, sku)
        if price is None:
            continue
        found[name] = {
            "name": name,
            "vcpus": int(a["vcpu"]),
            "memory_mib": _memory_mib(a["memory"]),
            "arch": ARCHES[name.split(".")[0]],
            "hourly": price.rstrip("0").rstrip(".") if "." in price else price,
        }
    return sorted(found.values(), key=lambda t: (t["name"].split(".")[0], t["vcpus"], t["memory_mib"]))


def fargate_prices(offer: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Fargate's hourly prices per vCPU and per GB, x86 and ARM, from an AmazonECS offer file."""
    prices: dict[str, dict[str, str]] = {"x86_64": {}, "arm64": {}}
    for sku, product in offer.get("products", {}).items():
        usage = product.get("attributes", {}).get("usagetype", "")
        for (arch, key), suffix in FARGATE_USAGE.items():
            if usage.split("-", 1)[-1] == suffix:
                price = _on_demand_usd(offer, sku)
                if price is not None:
                    prices[arch][key] = price.rstrip("0").rstrip(".")
    missing = [f"{arch} {key}" for (arch, key) in FARGATE_USAGE if key not in prices[arch]]
    if missing:
        raise ValueError(f"the ECS offer file has no Fargate price for {', '.join(missing)}")
    return prices


def refreshed(
    current: Mapping[str, Any],
    ec2_offer: Mapping[str, Any],
    ecs_offer: Mapping[str, Any],
    today: datetime.date,
) -> dict[str, Any]:
    """The table with the offer files' prices and today's date; what they do not cover is kept."""
    types = instance_prices(ec2_offer)
    if not types:
        raise ValueError("the EC2 offer file lists none of oct's instance types")
    return {**current, "as_of": today.isoformat(), "ec2": types, "fargate": fargate_prices(ecs_offer)}


def render(table: Mapping[str, Any]) -> str:
    """JSON with one instance type a line, so a refresh reads as a short diff."""
    head = {k: v for k, v in table.items() if k != "ec2"}
    lines = [json.dumps(t, sort_keys=False) for t in table["ec2"]]
    body = json.dumps(head, indent=1)[:-2]
    return body + ',\n "ec2": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"


def _download(service: str, region: str) -> Any:  # pragma: no cover - needs the internet
    url = OFFER_URL.format(service=service, region=region)
    print(f"downloading {url}", file=sys.stderr)
    with urllib.request.urlopen(url, timeout=600) as answer:
        return json.load(answer)


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - the parsing above is tested
    parser = argparse.ArgumentParser(description="Refresh oct's AWS price table from AWS's offer files.")
    parser.add_argument("--ec2", type=Path, help="a saved AmazonEC2 offer file (default: download)")
    parser.add_argument("--ecs", type=Path, help="a saved AmazonECS offer file (default: download)")
    args = parser.parse_args(argv)
    current = json.loads(TABLE.read_text())
    region = current["region"]
    ec2 = json.loads(args.ec2.read_text()) if args.ec2 else _download("AmazonEC2", region)
    ecs = json.loads(args.ecs.read_text()) if args.ecs else _download("AmazonECS", region)
    TABLE.write_text(render(refreshed(current, ec2, ecs, datetime.date.today())))
    print(f"wrote {TABLE}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
