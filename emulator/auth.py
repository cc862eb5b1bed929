"""IMS (OAuth server-to-server tokens) and the adobe.io gateway's header checks."""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from starlette.responses import Response

from emulator import errors
from emulator.config import Sandbox
from emulator.state import State, Token

router = APIRouter()


@router.post("/ims/token/v3")
async def ims_token(request: Request) -> Response:
    """client_credentials grant; parameters from the form body or the query string."""
    state: State = request.app.state.emulator
    params = {k: v[-1] for k, v in parse_qs(request.url.query).items()}
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/x-www-form-urlencoded"):
        body = (await request.body()).decode("utf-8", "replace")
        params.update({k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()})
    grant_type = params.get("grant_type")
    if not grant_type:
        raise errors.ims(400, "invalid_request", "missing grant_type parameter")
    if grant_type != "client_credentials":
        raise errors.ims(400, "unsupported_grant_type", f"grant_type {grant_type} is not supported")
    for name in ("client_id", "client_secret", "scope"):
        if not params.get(name):
            raise errors.ims(400, "invalid_request", f"missing {name} parameter")
    client = state.clients.get(params["client_id"])
    if client is None:
        raise errors.ims(400, "invalid_client", "invalid client_id parameter")
    if params["client_secret"] != client.client_secret:
        raise errors.ims(401, "invalid_client", "invalid client_secret parameter")
    allowed = {s.strip() for s in client.scopes.split(",")}
    unknown = sorted({s.strip() for s in params["scope"].split(",") if s.strip()} - allowed)
    if unknown:
        raise errors.ims(400, "invalid_scope", f"Invalid scope(s): {','.join(unknown)}")
    token, lifetime = state.issue_token(client.client_id, state.config.client_org(client))
    return errors.json_response(
        {"access_token": token, "token_type": "bearer", "expires_in": int(lifetime)}
    )


@dataclass
class Caller:
    """Who is calling a Platform/CJA route, after the gateway checks passed."""

    token: Token
    client_id: str
    org_id: str
    sandbox: Sandbox


def bearer(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else ""


def valid_token(state: State, token: str | None) -> Token | None:
    info = state.tokens.get(token) if token else None
    if info is None or info.expires_at <= time.time():
        return None
    return info


def check_gateway(request: Request) -> Token:
    """The adobe.io gateway checks every Platform and CJA call goes through, in its order."""
    state: State = request.app.state.emulator
    headers = request.headers
    token = bearer(request)
    if token is None:
        raise errors.gateway("403010", "Oauth token is missing.")
    api_key = headers.get("x-api-key")
    if not api_key:
        raise errors.gateway("403000", "Api Key is required")
    if api_key not in state.clients:
        raise errors.gateway("403003", "Api Key is invalid")
    info = valid_token(state, token)
    if info is None:
        raise errors.gateway("401013", "Oauth token is not valid")
    if info.client_id != api_key:
        raise errors.gateway("403003", "Api Key is invalid")
    org = headers.get("x-gw-ims-org-id")
    if not org:
        raise errors.gateway("400003", "Missing header")
    if org != info.org_id:
        raise errors.gateway("403025", "Profile is not valid")
    return info


def check_platform(request: Request, *, needs_body: bool = False) -> Caller:
    """Gateway checks plus the sandbox (absent header = the default production sandbox)."""
    state: State = request.app.state.emulator
    info = check_gateway(request)
    headers = request.headers
    sandbox_name = headers.get("x-sandbox-name")
    if not sandbox_name and state.config.require_sandbox_header:
        raise errors.platform(
            400,
            "Bad Request",
            "the x-sandbox-name header is required (the name of the sandbox, e.g. prod)",
            code="SBX-1000",
        )
    sandbox = state.config.sandbox(sandbox_name) if sandbox_name else state.config.default_sandbox
    if sandbox is None:
        raise errors.platform(
            403,
            "Forbidden",
            f"Sandbox {sandbox_name!r} does not exist or the caller has no access to it",
            code="SBX-1001",
        )
    if needs_body and not headers.get("content-type", "").startswith("application/json"):
        raise errors.bad_content_type()
    return Caller(info, info.client_id, info.org_id, sandbox)
