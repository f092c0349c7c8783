"""Node runtimes: how one node makes an instance match an :class:`~octctl.runtime.base.InstanceSpec`.

Import from the modules themselves (``base`` holds the contract, the packages ``docker`` and
``process`` the runtimes, ``firewall`` the guard of the control ports): this package re-exports
nothing, so importing the contract never loads the docker SDK.
"""
