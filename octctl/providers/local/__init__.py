"""The local provider: every node is an ``oct-ctl`` process on its own 127.0.0.N address."""
