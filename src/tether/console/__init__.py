"""The web pages Tether serves: the sign-in and consent pages of the built-in OpenID provider,
and the console (:mod:`tether.api.console`). Server-rendered Jinja2 with autoescaping on every
template, so a name such as ``<script>`` renders as text; no inline script anywhere (the pages'
Content-Security-Policy forbids it). The only script is served from ``static/``: htmx, vendored
(``static/vendor/``, no CDN, no build step), and the console's own small ``console.js``."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

__all__ = ["PAGES", "STATIC", "TEMPLATES"]

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"
#: Every page's templates: autoescaped whatever the file's name, undefined values refused.
PAGES = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
)
