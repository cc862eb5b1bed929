"""``python -m emulator --host 127.0.0.1 --port 8765 --state DIR [--config FILE]``."""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path
from typing import Any

import uvicorn

from emulator.app import create_app
from emulator.config import load_config
from emulator.faults import TRANSPORT_KEY


def http_protocol() -> Any:
    """httptools (fast) with the transport exposed so a fault can drop the connection.

    Without httptools (uvicorn installed without its extras) plain h11 serves, slower, and
    the "drop" fault answers 500 instead of closing the connection.
    """
    if importlib.util.find_spec("httptools") is None:
        return "h11"
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class EmulatorHttpProtocol(HttpToolsProtocol):
        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            cycle = self.cycle
            if cycle is not None and cycle.scope is self.scope:
                self.scope.setdefault("extensions", {})[TRANSPORT_KEY] = self.transport

    return EmulatorHttpProtocol


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m emulator", description="Local emulator of Adobe IMS, AEP and CJA APIs."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--state", type=Path, help="folder for the DuckDB state (default: memory)")
    parser.add_argument("--config", type=Path, help="JSON file merged over default_config.json")
    parser.add_argument(
        "--lake",
        default=os.environ.get("CJA_AUDIENCES_HOME"),
        help="lake root served by CJA /reports (default: $CJA_AUDIENCES_HOME)",
    )
    parser.add_argument("--token-lifetime", type=float, help="IMS token lifetime in seconds")
    parser.add_argument("--log-level", default="warning")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    overrides: dict = {"token_lifetime_s": args.token_lifetime}
    if args.lake:
        overrides["cja"] = {"lake": args.lake}
    config = load_config(args.config, **overrides)
    app = create_app(config, args.state)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http=http_protocol(),
        log_level=args.log_level,
        access_log=False,
        backlog=2048,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=2,  # "hang" faults would otherwise block shutdown
    )


if __name__ == "__main__":
    main()
