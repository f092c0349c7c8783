"""Admission of joining nodes, on the real state transitions with an in-memory log (no HTTP, no Raft)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from octctl.api.models import JoinRequest
from octctl.membership import Membership, NoVoterSeat, WrongSecret
from octctl.node_settings import Secrets
from octctl.state.model import MAX_VOTERS, ClusterState, apply_command, command, empty_state

CLUSTER = "c1"
SECRETS = Secrets(token="t", raft_password="raft-secret", ca_key="", ca_cert="")


class MemoryLog:
    """The replicated log as admission sees it: commands go through the real ``apply_command``."""

    def __init__(self) -> None:
        self.state = empty_state()
        self.voters: list[str] = []
        self.commands: list[dict[str, Any]] = []
        apply_command(self.state, command("init", cluster=CLUSTER))

    def view(self) -> ClusterState:
        return self.state

    def members(self) -> list[str]:
        return list(self.voters)

    async def add_member(self, address: str) -> None:
        await asyncio.sleep(0)  # a membership change takes a round trip: let other admissions run
        self.voters.append(address)

    async def execute(self, cmd: dict[str, Any]) -> Any:
        self.commands.append(cmd)
        return apply_command(self.state, cmd)


def join_request(n: int, voter: bool = True, secrets: Secrets = SECRETS) -> JoinRequest:
    address = f"127.0.0.{n}"
    return JoinRequest(
        node=f"n{n}",
        address=address,
        api_port=31888,
        raft_port=31889,
        voter=voter,
        cpus=1000,
        memory=1024,
        proof=secrets.raft_proof(CLUSTER, f"n{n}", address, 31889),
    )


def membership(log: MemoryLog) -> Membership:
    return Membership(log, SECRETS, CLUSTER, clock=lambda: 42.0)


async def test_a_voter_joins_as_a_raft_member_and_a_joining_record() -> None:
    log = MemoryLog()
    assert await membership(log).admit(join_request(2))
    assert log.voters == ["127.0.0.2:31889"]
    record = log.state["nodes"]["n2"]
    assert (record["status"], record["voter"], record["joined_at"]) == ("joining", True, 42.0)


async def test_a_proof_made_with_another_secret_is_refused_and_changes_nothing() -> None:
    log = MemoryLog()
    stranger = SECRETS.model_copy(update={"raft_password": "another"})
    with pytest.raises(WrongSecret, match="does not hold the Raft secret of cluster c1"):
        await membership(log).admit(join_request(2, secrets=stranger))
    assert (log.voters, log.commands) == ([], [])


async def test_a_restarted_member_asking_again_changes_nothing() -> None:
    log = MemoryLog()
    admission = membership(log)
    await admission.admit(join_request(2))
    log.commands.clear()
    assert not await admission.admit(join_request(2))
    assert (log.voters, log.commands) == (["127.0.0.2:31889"], [])


async def test_past_the_voter_cap_a_voter_is_refused_and_a_non_voter_admitted() -> None:
    log = MemoryLog()
    admission = membership(log)
    for n in range(2, 2 + MAX_VOTERS):
        await admission.admit(join_request(n))
    assert admission.members().voter_slots == 0
    with pytest.raises(NoVoterSeat, match="join as a non-voting replica"):
        await admission.admit(join_request(20))
    assert await admission.admit(join_request(20, voter=False))
    assert len(log.voters) == MAX_VOTERS
    assert log.state["nodes"]["n20"]["voter"] is False


async def test_a_promoted_node_takes_the_seat_it_already_holds() -> None:
    """A non-voter the leader promoted counts as a voter before it is a Raft member: the cap must
    not refuse it its own seat."""
    log = MemoryLog()
    admission = membership(log)
    for n in range(2, 1 + MAX_VOTERS):
        await admission.admit(join_request(n))
    await admission.admit(join_request(20, voter=False))
    log.state["nodes"]["n20"]["voter"] = True  # the leader's promotion
    assert admission.members().voter_slots == 0
    assert await admission.admit(join_request(20))
    assert "127.0.0.20:31889" in log.voters


async def test_two_joiners_racing_for_the_last_seat_do_not_both_get_it() -> None:
    log = MemoryLog()
    admission = membership(log)
    for n in range(2, 1 + MAX_VOTERS):
        await admission.admit(join_request(n))
    results = await asyncio.gather(
        admission.admit(join_request(30)), admission.admit(join_request(31)), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["NoVoterSeat", "bool"]
    assert len(log.voters) == MAX_VOTERS
