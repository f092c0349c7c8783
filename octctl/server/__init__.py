"""oct-ctl's HTTP server: the top layer, which turns requests into calls on the node.

``app`` registers the routes, ``http`` holds what every handler shares (errors, auth, forwarding
writes to the leader), the ``*_routes`` modules the handlers, ``views`` the ``/v1/status`` answer,
``openapi`` the document, ``limits`` and ``site`` the bounds on connections and TLS handshakes.
"""
