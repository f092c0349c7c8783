"""The dashboard's HTML, from Jinja templates beside this module (``templates/``).

Autoescaping is on for every template: log lines, event messages and health-check output are the
services' own words, and a service may print ``<script>``.
"""

from __future__ import annotations

import datetime
import functools
from pathlib import Path
from typing import Any

from aiohttp import web

__all__ = ["PAGE_HEADERS", "STATIC", "html", "message", "render"]

HERE = Path(__file__).parent
#: The files under ``/ui/static/``: a fixed list, never a path from the request.
STATIC = {
    "htmx.min.js": ("text/javascript; charset=utf-8", HERE / "static" / "htmx.min.js"),
    "oct.css": ("text/css; charset=utf-8", HERE / "static" / "oct.css"),
}


#: What a browser may do with these pages: run and load only this node's own files, be framed by
#: nobody, and tell nobody where it came from (the login link is in the address bar once).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _clock(at: float | None) -> str:
    if at is None:
        return "—"
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(at: float | None, now: float) -> str:
    if at is None:
        return "never"
    seconds = max(0, int(now - at))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _percent(used: int, total: int) -> int:
    return round(100 * used / total) if total else 0


@functools.cache
def _environment() -> Any:
    """Made on the first page a node serves: jinja2 (2.4 MB) is not loaded by nodes nobody views."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["clock"] = _clock
    env.globals.update(ago=_ago, percent=_percent)
    return env


def render(template: str, **context: Any) -> str:
    return _environment().get_template(template).render(**context)


def html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", headers=PAGE_HEADERS)


def message(status: int, heading: str, text: str) -> web.Response:
    """A page that only says something (a refused login, a missing service)."""
    return html(render("message.html.j2", heading=heading, text=text), status=status)
