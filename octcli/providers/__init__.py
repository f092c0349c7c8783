"""The CLI's half of each provider, one module or package per kind.

Each holds a :class:`octcli.provider.ClusterProvider` subclass (the contract is in
``octcli/provider.py``) and is named by one line in :data:`octcli.provider.PROVIDERS`, which
imports it only when a project of that kind is deployed or destroyed; nothing else in ``octcli``
imports a provider. docs/providers.md says how to add one.
"""
