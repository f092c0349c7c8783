"""The leader: the loops that make the cluster match the state, run by whichever node leads.

Nomad splits its leader into the FSM (sole writer), heartbeats, autopilot, the plan applier and
the deployment watcher; here the same jobs are small collaborators that the coordinator
(:mod:`octctl.leader.loop`) runs in one pass over one snapshot:

- :mod:`~octctl.leader.liveness`: asks every agent what it runs, marks silent nodes unreachable;
- :mod:`~octctl.leader.fleet`: membership and machines (replace the dead, promote voters, grow,
  shrink, place services);
- :mod:`~octctl.leader.converge`: pushes the difference to the agents, dependencies first;
- :mod:`~octctl.leader.deployments`: the deployment's progress, failure and destroy;
- :mod:`~octctl.leader.publish`: public addresses and public DNS names through the provider.

They depend on the protocols in :mod:`~octctl.leader.ports` (the cluster log, the agents) and on
:class:`octctl.providers.base.Provider`, never on the concrete Raft node or HTTP client, and a
new set is made for every leader term, so nothing a previous term learned leaks into the next.
"""

from octctl.leader.loop import Leader

__all__ = ["Leader"]
