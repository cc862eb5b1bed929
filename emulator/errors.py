"""Adobe's error bodies, one helper per family, so every route fails the way Adobe does.

Adobe has several error dialects: the adobe.io gateway (``error_code`` + ``message``), IMS
(OAuth ``error`` + ``error_description``), Data Collection (DCCS problem documents), Platform
services (problem documents with ``title``/``detail``) and CJA reporting (``errorCode``).
"""

from __future__ import annotations

from typing import Any

from pydantic_core import to_json
from starlette.responses import Response

JSON = "application/json"


class AdobeHTTPError(Exception):
    """Raised anywhere in a handler; the app turns it into ``status`` + ``body``."""

    def __init__(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body
        self.headers = headers or {}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response serialized by pydantic-core (much faster than the stdlib encoder)."""
    return Response(to_json(body), status_code=status, media_type=JSON, headers=headers)


def gateway(error_code: str, message: str) -> AdobeHTTPError:
    """adobe.io gateway errors: the HTTP status is the code's first three digits."""
    return AdobeHTTPError(int(error_code[:3]), {"error_code": error_code, "message": message})


def ims(status: int, error: str, description: str) -> AdobeHTTPError:
    return AdobeHTTPError(status, {"error": error, "error_description": description})


def dccs(
    status: int, title: str, message: str, kind: str = "data-collection-service"
) -> AdobeHTTPError:
    """Data Collection Core Service (streaming) problem documents."""
    return AdobeHTTPError(
        status,
        {
            "type": f"https://ns.adobe.com/adobecloud/problem/{kind}",
            "status": str(status),
            "title": title,
            "report": {"message": message},
        },
    )


def platform(status: int, title: str, detail: str, code: str = "EMU") -> AdobeHTTPError:
    """Platform service problem documents (Audiences, Profile Access, Catalog)."""
    return AdobeHTTPError(
        status,
        {
            "type": f"https://ns.adobe.com/aep/errors/{code}-{status}",
            "status": status,
            "title": title,
            "detail": detail,
        },
    )


def bad_content_type() -> AdobeHTTPError:
    return AdobeHTTPError(
        400,
        {
            "type": "/placeholder/type/uri",
            "status": 400,
            "title": "BadRequestError",
            "detail": "A valid content-type must be specified",
        },
    )


def cja(status: int, code: str, description: str) -> AdobeHTTPError:
    """CJA Reporting/Segments API errors (Analytics 2.0 dialect)."""
    return AdobeHTTPError(status, {"errorCode": code, "errorDescription": description})


def cja_throttled() -> AdobeHTTPError:
    return gateway("429050", "Too many requests")


CJA_PREFIXES = ("/reports", "/segments", "/filters", "/data/dataviews")
# errorCode values from the CJA spec's enum, by HTTP status
CJA_CODES = {
    400: "invalid_request",
    404: "resource_not_found",
    405: "method_not_allowed",
    429: "too_many_requests",
    500: "unexpected_error",
    503: "resource_temporarily_unavailable",
}


def for_path(path: str, status: int, title: str, message: str) -> AdobeHTTPError:
    """An error in the dialect of the Adobe service that owns ``path``."""
    if path.startswith("/collection"):
        return dccs(status, title, message)
    if path.startswith("/ims"):
        return ims(status, title.lower().replace(" ", "_"), message)
    if path.startswith(CJA_PREFIXES):
        return cja(status, CJA_CODES.get(status, "unexpected_error"), message)
    return platform(status, title, message)
