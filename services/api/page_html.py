"""The pipeline page's HTML: the same document live (`/ui`, data fetched) and in a report
(data embedded), so both draw the same charts. Its assets are files in `ui/`, inlined: no
CDN, no other request, no JavaScript library."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def _asset(name: str) -> str:
    return resources.files("services.api").joinpath("ui", name).read_text(encoding="utf-8")


def render_page(data: dict[str, Any] | None, title: str = "Headwater") -> str:
    """`data` None: the page asks the API; else `{"pipelines": {name: page_data}, ...}`
    shown as it is, with no network."""
    # inside <script>, "</" would end the element; JSON allows "<\/" for it
    embedded = json.dumps(data, allow_nan=False, separators=(",", ":")).replace("</", "<\\/")
    return (
        _asset("page.html")
        .replace("{{title}}", _escape(title))
        .replace("/*{{css}}*/", _asset("page.css"))
        .replace("/*{{data}}*/null", embedded)
        .replace("/*{{js}}*/", _asset("page.js"))
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
