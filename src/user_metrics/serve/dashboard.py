"""The dashboard's files: one HTML shell, two scripts and a stylesheet, served by the API server.

The pages (``/``, ``/users/{id}``, ``/properties``, ``/profitability``, ``/coverage``) are the same
shell; its scripts draw them from the HTTP JSON API with the read token the user gives it. The
files hold no data, so they are served without a token; every number on the page comes from
``/api/v1`` and needs one (``/healthz``, read for the server's time zone, needs none).
Nothing is loaded from elsewhere: the Content-Security-Policy allows this origin only.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

ASSETS = {
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/profit.js": ("profit.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}
SHELL = ("index.html", "text/html; charset=utf-8")
BASE = b'<base href="./">'  # in the shell, as written
HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
]


def is_page(path: str) -> bool:
    """``/``, ``/users``, ``/users/{id}`` (one percent-encoded segment), ``/properties``,
    ``/profitability``, ``/coverage``."""
    if path in ("/", "/users", "/users/", "/properties", "/profitability", "/coverage"):
        return True
    return path.startswith("/users/") and "/" not in path[len("/users/") :]


def lookup(path: str) -> tuple[bytes, str] | None:
    """The file at ``path`` and its content type, or None when the path is not the dashboard's.

    A page's ``<base href>`` leads from its path back to the root ("./" from ``/``, "../" from
    ``/users/ada``), so the page finds its files and the API through a proxy that serves this
    server under a path prefix, and the script learns the prefix from it.
    """
    if is_page(path):
        shell, content_type = _read(*SHELL)
        root = "../" * (path.count("/") - 1) or "./"
        return shell.replace(BASE, b'<base href="%s">' % root.encode(), 1), content_type
    if path in ASSETS:
        return _read(*ASSETS[path])
    return None


@cache
def _read(name: str, content_type: str) -> tuple[bytes, str]:
    return (resources.files("user_metrics.serve").joinpath("dashboard", name).read_bytes(), content_type)
