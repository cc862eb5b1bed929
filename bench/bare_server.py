"""The bench's yardstick: a bare FastAPI/uvicorn server that only parses streaming bodies.

Same framework, event loop, HTTP parser, JSON parser and server settings as the emulator;
no auth, validation, profile store, journal or per-message answers. ``bench.emulator`` runs
it in the same session so the emulator's figure reads as a share of what the stack allows.

    python -m bench.bare_server --port N
"""

from __future__ import annotations

import argparse
import importlib.util

import msgspec
import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response

decode = msgspec.json.Decoder().decode


def create_app() -> FastAPI:
    app = FastAPI(docs_url=None, openapi_url=None, redoc_url=None)

    @app.get("/health")
    async def health() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.post("/collection/batch/{inlet_id}")
    async def collect(inlet_id: str, request: Request) -> Response:
        messages = decode(await request.body())["messages"]
        body = b'{"messages":%d}' % len(messages)
        return Response(body, status_code=207, media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        log_level="warning",
        access_log=False,
        backlog=2048,
    )


if __name__ == "__main__":
    main()
