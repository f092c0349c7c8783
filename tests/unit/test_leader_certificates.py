"""The leader's certificate duty against a fake Raft and a fake CA: which sites get an order,
what is committed, renewal in the last third of a certificate's life, failed orders backed off,
certificates of sites gone dropped, and orders stopped when the term ends."""

from __future__ import annotations

import asyncio
import time

from octctl.config.models import AcmeSettings
from octctl.ingress.acme_orders import AcmeError, Issued
from octctl.leader.certificates import RETRY_FIRST, Certifier, due
from octctl.state.desired import desired_project
from octctl.state.model import acme_of, command
from tests.unit.leader_fakes import FakeRaft
from tests.unit.test_desired import state

NAME = "web.shop.example.com"
DAY = 24 * 3600.0


class FakeCa(Certifier):
    """Issues at once (or fails with ``refuse``), recording each order's names."""

    def __init__(self, raft: FakeRaft) -> None:
        super().__init__(raft)
        self.refuse: str | None = None
        self.ordered: list[tuple[str, ...]] = []

    async def _issue(self, names: tuple[str, ...], settings: AcmeSettings) -> Issued:
        self.ordered.append(names)
        if self.refuse:
            raise AcmeError(self.refuse)
        now = time.time()
        return Issued(names, "CHAIN", "KEY", now, now + 90 * DAY)


def raft_with_web() -> FakeRaft:
    raft = FakeRaft()
    raft.state = state()  # web is public on 8081 under shop.example.com, on AWS: HTTPS by default
    return raft


async def settle(certifier: Certifier) -> None:
    await asyncio.gather(*certifier.orders.values())


def test_a_certificate_is_due_when_missing_for_other_names_or_in_its_last_third() -> None:
    record = {"names": [NAME], "not_before": 0.0, "not_after": 90 * DAY}
    assert due(None, (NAME,), 0.0)
    assert due(record, (NAME, "shop.example.com"), 0.0)
    assert not due(record, (NAME,), 59 * DAY)  # 31 days left: renewed at 30 (Let's Encrypt's advice)
    assert due(record, (NAME,), 61 * DAY)
    short = {"names": [NAME], "not_before": 0.0, "not_after": 12 * 3600.0}  # a test CA's 12 hours
    assert not due(short, (NAME,), 7 * 3600.0) and due(short, (NAME,), 9 * 3600.0)


async def test_each_site_is_ordered_once_and_its_certificate_committed() -> None:
    raft = raft_with_web()
    certifier = FakeCa(raft)
    view = raft.view()
    await certifier.keep(view, desired_project(view))
    await certifier.keep(view, desired_project(view))  # an order under way is not doubled
    await settle(certifier)
    assert certifier.ordered == [(NAME,)]
    record = acme_of(raft.state)["certificates"]["web"]
    assert (record["names"], record["fullchain"], record["key"]) == ([NAME], "CHAIN", "KEY")
    view = raft.view()
    await certifier.keep(view, desired_project(view))  # valid for 90 days: nothing to do
    await settle(certifier)
    assert certifier.ordered == [(NAME,)]


async def test_a_refused_order_waits_before_the_next_try_and_says_why(caplog) -> None:  # type: ignore[no-untyped-def]
    raft = raft_with_web()
    certifier = FakeCa(raft)
    certifier.refuse = "the CA could not connect to web.shop.example.com"
    view = raft.view()
    await certifier.keep(view, desired_project(view))
    await settle(certifier)
    await certifier.keep(view, desired_project(view))
    await settle(certifier)
    assert certifier.ordered == [(NAME,)], "no second order within the back-off"
    next_try, after_that = certifier.backoff["web"]
    assert next_try > time.monotonic() + RETRY_FIRST - 5 and after_that == 2 * RETRY_FIRST
    assert "could not connect" in caplog.text and "web" not in acme_of(raft.state)["certificates"]


async def test_the_certificate_of_a_service_no_longer_public_is_dropped() -> None:
    raft = raft_with_web()
    record = {"names": [NAME], "fullchain": "C", "key": "K", "not_before": 0.0, "not_after": 1.0}
    await raft.execute(command("certificate", service="web", certificate=record))
    await raft.execute(command("certificate", service="gone", certificate=record))
    raft.state["project"]["project"]["domain"] = None  # type: ignore[index]
    raft.state["generation"] += 1
    certifier = FakeCa(raft)
    view = raft.view()
    await certifier.keep(view, desired_project(view))
    assert acme_of(raft.state)["certificates"] == {} and certifier.ordered == []


async def test_orders_stop_when_the_term_ends() -> None:
    raft = raft_with_web()
    started = asyncio.Event()

    class SlowCa(Certifier):
        async def _issue(self, names: tuple[str, ...], settings: AcmeSettings) -> Issued:
            started.set()
            await asyncio.sleep(3600)
            raise AssertionError("never")

    certifier = SlowCa(raft)
    view = raft.view()
    await certifier.keep(view, desired_project(view))
    await started.wait()
    certifier.close()
    await asyncio.sleep(0)
    assert all(task.cancelled() or task.done() for task in certifier.orders.values())
    await asyncio.sleep(0.01)
    assert all(task.cancelled() for task in certifier.orders.values())
