"""The ingress: every node serves every public service's port, balanced over its instances.

A proxy from the distribution (HAProxy) carries the traffic; oct-ctl only tells it what to serve
(:mod:`.routes`) and keeps it running (:mod:`.haproxy`). See docs/ingress.md.
"""
