"""What every Serve app here shares over HTTP: the proxy address, API-key checks, JSON bodies and
error handlers that answer in the OpenAI error shape.

All apps of a cluster share one Serve HTTP proxy: the first `start_proxy` binds it (loopback by
default) and later ones find it where it is.
"""

from __future__ import annotations

import hmac
import json
import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from distill_ray.config.serving import ServeConfig
from distill_ray.models.openai_protocol import ProtocolError, error_body


def add_error_handlers(app: FastAPI, service: str) -> None:
    """ProtocolError -> its 4xx body; anything else -> a 500 in the same shape, logged."""
    logger = logging.getLogger(f"serve.{service}")

    async def protocol_error(_request: Request, exc: ProtocolError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code)

    async def server_error(_request: Request, exc: Exception) -> JSONResponse:
        logger.exception("%s request failed", service)
        return JSONResponse(error_body(f"internal error: {exc}", type="server_error"), status_code=500)

    app.add_exception_handler(ProtocolError, protocol_error)
    app.add_exception_handler(Exception, server_error)


async def json_body(request: Request):
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProtocolError("request body is not valid JSON") from None


def check_api_key(request: Request, api_key: str | None) -> None:
    """With a key configured, require `Authorization: Bearer <key>` (compared in constant time)."""
    if not api_key:
        return
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
        raise ProtocolError(
            "Incorrect or missing API key: send 'Authorization: Bearer <key>'", status_code=401, code="invalid_api_key"
        )


def start_proxy(serve_cfg: ServeConfig) -> tuple[str, int]:
    """Start Serve (a no-op with a warning when it runs) and return the proxy's dialable host and port."""
    serve.start(http_options={"host": serve_cfg.host, "port": serve_cfg.port})
    host, port = _proxy_address(serve_cfg)
    return _url_host(host), port


def _proxy_address(serve_cfg: ServeConfig) -> tuple[str, int]:
    """Host and port of the running proxy; Serve has no public getter, so read its client."""
    try:
        from ray.serve.context import _get_global_client

        options = _get_global_client().http_config
        return str(options.host), int(options.port)
    except Exception:  # private API moved: the requested options are the best guess
        return serve_cfg.host, serve_cfg.port


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        # Wildcard binds are not addresses a client can dial; this node's IP is.
        import ray.util

        host = ray.util.get_node_ip_address()
    return f"[{host}]" if ":" in host else host
