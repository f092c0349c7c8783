"""Service discovery: every node answers DNS for the cluster zone from its own replica."""
