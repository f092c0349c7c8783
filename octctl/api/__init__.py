"""The wire models of oct-ctl's HTTP API (``models``): the bottom layer that the CLI, the peers
client, the agent and the server all speak. The server itself lives in :mod:`octctl.server`."""
