"""oct-ctl: the daemon on every oct node (Raft replica, leader loop, agent, API)."""

__version__ = "0.1.0"
