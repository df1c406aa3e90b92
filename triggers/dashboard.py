"""GET /api/dashboard: the live dashboard, one HTML page served by the app itself.

The page lives in `dashboard/` at the app's root (index.html, app.css, app.js: plain files, no
build step, nothing fetched from elsewhere) and ships in the deploy package with the app. It is
served as ONE self-contained document, the stylesheet and the script inlined, because a page
behind `auth_level=FUNCTION` is opened as `/api/dashboard?code=<function key>` and a browser
would send no key with separate `<script src>` / `<link href>` requests. The script reads `code`
from the page's own URL and sends it as `x-functions-key` on every API call: the two places a
key may travel ("Work with access keys in Azure Functions", learn.microsoft.com/azure/
azure-functions/function-keys-how-to). A function key opens only its own function, so the page,
which calls the API's functions, needs a host key (the app's `default` host key, say).

The page carries a Content-Security-Policy that lets run only the inlined script and style (by
their SHA-256 hashes, CSP Level 2 `'sha256-...'` sources) and call only this origin: task
reasons come from jobs, and a reason that slipped past the page's escaping could still run
nothing. `Referrer-Policy: no-referrer` keeps the key in the page's URL from leaking to the
artifact links (blob storage) in the Referer header.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func

bp = df.Blueprint()

ASSETS = Path(__file__).resolve().parent.parent / "dashboard"
STYLE_TAG = '<link rel="stylesheet" href="app.css">'
SCRIPT_TAG = '<script src="app.js"></script>'


class DashboardAssetError(RuntimeError):
    """The dashboard's files are missing or do not fit together (a packaging mistake)."""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@cache
def page() -> tuple[bytes, str]:
    """The assembled page and its Content-Security-Policy (built once per worker process)."""
    html = (ASSETS / "index.html").read_text(encoding="utf-8")
    css = (ASSETS / "app.css").read_text(encoding="utf-8")
    js = (ASSETS / "app.js").read_text(encoding="utf-8")
    if html.count(STYLE_TAG) != 1 or html.count(SCRIPT_TAG) != 1:
        raise DashboardAssetError(f"index.html must hold {STYLE_TAG} and {SCRIPT_TAG} once each")
    # Inside <script>/<style> only the closing tag ends the element (HTML's raw text elements).
    if "</script" in js.lower() or "</style" in css.lower():
        raise DashboardAssetError(
            "app.js / app.css must not contain a closing </script> or </style>"
        )
    style, script = f"\n{css}", f"\n{js}"
    body = html.replace(STYLE_TAG, f"<style>{style}</style>").replace(
        SCRIPT_TAG, f"<script>{script}</script>"
    )
    csp = "; ".join(
        (
            "default-src 'none'",
            f"script-src {_sha256(script)}",
            f"style-src {_sha256(style)}",
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )
    return body.encode(), csp


@bp.route(route="dashboard", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def dashboard(req: func.HttpRequest) -> func.HttpResponse:
    body, csp = page()
    return func.HttpResponse(
        body,
        status_code=200,
        mimetype="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": csp,
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            # The page holds no data (it fetches it), but its URL holds the key: keep it out of
            # shared caches.
            "Cache-Control": "no-store",
        },
    )
