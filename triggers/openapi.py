"""GET /api/openapi.json: the OpenAPI 3.1 description of the HTTP API (domain/openapi.py).

Served anonymously: the document holds no secret, only the API's shape, and a client (the CLI,
a code generator) reads it before it has a key. Its `servers` entry is the origin the request
came to, so the document works as it is behind any host name; the start request's `workers`
maximum is the app's MAX_WORKERS setting.
"""

from __future__ import annotations

import functools
import json
from urllib.parse import urlsplit

import azure.durable_functions as df
import azure.functions as func

from adapters.settings import load_settings
from domain.openapi import openapi_document

bp = df.Blueprint()


@functools.lru_cache(maxsize=16)
def _document_text(server_url: str, max_workers: int) -> str:
    return json.dumps(openapi_document(server_url=server_url, max_workers=max_workers), indent=1)


@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi_json(req: func.HttpRequest) -> func.HttpResponse:
    parts = urlsplit(req.url)
    text = _document_text(f"{parts.scheme}://{parts.netloc}", load_settings().max_workers)
    return func.HttpResponse(text, status_code=200, mimetype="application/json")
