"""Adobe's published OpenAPI specs as a checker: responses and requests against their schemas.

The specs in ``specs/`` are verbatim copies of Adobe's (see ``specs/README.md``). A URL is
matched to the spec and path template that own it (literal segments before ``{params}``), the
operation's schema is turned from OpenAPI 3.0 into JSON Schema (``nullable``) and checked
with ``jsonschema`` (Draft 4, the dialect OpenAPI 3.0 builds on). Generator artifacts in
Adobe's specs are read as what they mean, and where Adobe's pages document forms the spec
dropped, the spec is widened to accept both; every such reading is in :func:`_adobe_pages`
or :func:`_to_json_schema` and listed in emulator/README.md ("Contract tests").
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SPECS = Path(__file__).with_name("specs")
METHODS = ("get", "post", "put", "patch", "delete")

# spec file -> the path prefix its server URL puts before every path of the spec
SERVERS = {
    "streaming-ingestion.yaml": "",
    "segmentation.yaml": "/data/core/ups",
    "profile.yaml": "/data/core",
    "catalog.yaml": "/data/foundation/catalog",
    "cja-swagger.json": "",
}


# Lists whose spec gives the item's schema as the whole response's: (spec, template, method)
# -> the member holding the items (Adobe's segment-definitions page shows {segments, page})
ITEM_LISTS = {("segmentation.yaml", "/segment/definitions", "get"): "segments"}


class ContractError(AssertionError):
    """A request or response that Adobe's spec does not allow; the message says where."""


def _is_java_map(schema: Any) -> bool:
    """``Map<String, Object>`` rendered as "every value is an object" (it means: any value)."""
    return (
        isinstance(schema, dict)
        and schema.get("type") == "object"
        and not schema.get("properties")
        and set(schema) <= {"type", "properties"}
    )


def _to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema objects to Draft 4: ``nullable`` adds null; Java maps mean any."""
    if isinstance(node, list):
        return [_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    # YAML reads status codes as ints; JSON pointers need string keys
    out = {str(k): _to_json_schema(v) for k, v in node.items() if k not in ("example", "examples")}
    if _is_java_map(node.get("additionalProperties")):
        out["additionalProperties"] = {}
    if _is_java_map(node.get("items")):
        out["items"] = {}  # the same artifact for List<Object>
    if "oneOf" in out:
        # overlapping alternatives without a discriminator: "one of" can only mean "any of"
        out["anyOf"] = out.pop("oneOf")
    if node.get("nullable") is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        elif "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


@functools.cache
def spec(name: str) -> dict[str, Any]:
    text = (SPECS / name).read_text()
    raw = json.loads(text) if name.endswith(".json") else yaml.load(text, Loader=_loader())
    doc = _to_json_schema(raw)
    if name == "segmentation.yaml":
        _adobe_pages(doc)
    return doc


def _adobe_pages(doc: dict[str, Any]) -> None:
    """Widen the Audiences API to what Adobe's audiences.md page still documents.

    Commit f79f91b of Adobe's spec dropped externally generated audiences from the
    request/response alternatives; the page keeps them (``type: ExternalSegment``, any
    identity namespace such as ``CustomerAudienceUpload``). The emulator serves both.
    """
    schemas = doc["components"]["schemas"]
    for schema in schemas.values():
        props = schema.get("properties") or {}
        if "ExternalAudience" in (props.get("type") or {}).get("enum", []):
            props["type"]["enum"].append("ExternalSegment")
        if "AEPSegments" in (props.get("namespace") or {}).get("enum", []):
            del props["namespace"]["enum"]
    external = {"$ref": "#/components/schemas/ExternallyGeneratedAudience"}
    paths = doc["paths"]
    for template, method, status in (
        ("/audiences", "post", "201"),
        ("/audiences/{AUDIENCE_ID}", "get", "200"),
        ("/audiences/{AUDIENCE_ID}", "put", "201"),
        ("/audiences/{AUDIENCE_ID}", "patch", "201"),
    ):
        schema = paths[template][method]["responses"][status]["content"]["application/json"]
        alternatives = schema["schema"].setdefault("anyOf", [])
        if external not in alternatives:
            alternatives.append(external)
    # PATCH's schema is its PQL example ({op, path, value: expression}); the page patches
    # any field (name, description, lifecycleState), so a value may be any JSON
    patch = paths["/audiences/{AUDIENCE_ID}"]["patch"]["requestBody"]["content"]
    patch["application/json"]["schema"]["items"]["properties"]["value"] = {}
    post = paths["/audiences"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    request = {"$ref": "#/components/schemas/CreateExternalAudienceRequestBody"}
    if request not in post.setdefault("anyOf", []):
        post["anyOf"].append(request)


def _loader() -> type[yaml.SafeLoader]:
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def _registry(name: str) -> Registry:
    resource = Resource.from_contents(spec(name), default_specification=DRAFT4)
    return Registry().with_resource(f"urn:adobe:{name}", resource)


@dataclass(frozen=True)
class Operation:
    spec_name: str
    template: str  # the spec's path template, without the server prefix
    method: str

    @property
    def pointer(self) -> str:
        escaped = self.template.replace("~", "~0").replace("/", "~1")
        return f"/paths/{escaped}/{self.method}"

    @property
    def doc(self) -> dict[str, Any]:
        return spec(self.spec_name)["paths"][self.template][self.method]

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.template} ({self.spec_name})"


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    pattern = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(pattern + "/?")


@functools.cache
def _templates() -> list[tuple[str, str, str, re.Pattern[str]]]:
    """(spec, prefix, template, regex), most literal first so /segments/validate wins."""
    rows = []
    for name, prefix in SERVERS.items():
        for template in spec(name)["paths"]:
            rows.append((name, prefix, template, _template_regex(prefix + template)))
    rows.sort(key=lambda r: (r[2].count("{"), -len(r[2])))
    return rows


def operation(method: str, url: str) -> Operation:
    """The spec operation that owns ``method url``; ContractError when no spec has it."""
    path = urlsplit(url).path
    method = method.lower()
    for name, _prefix, template, regex in _templates():
        if regex.fullmatch(path) and method in spec(name)["paths"][template]:
            return Operation(name, template, method)
    raise ContractError(f"{method.upper()} {path} is in none of Adobe's specs")


def _json_content(content: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    for media, body in (content or {}).items():
        if "json" in media and isinstance(body, dict) and "schema" in body:
            return f"content/{_escape(media)}/schema", body
    return None


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _validate(op: Operation, pointer: str, instance: Any, what: str) -> None:
    validator = jsonschema.Draft4Validator(
        {"$ref": f"urn:adobe:{op.spec_name}#{pointer}"}, registry=_registry(op.spec_name)
    )
    problems = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if problems:
        lines = [
            f"  at /{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in problems[:8]
        ]
        raise ContractError(f"{what} does not match {op}:\n" + "\n".join(lines))


def check_response(method: str, url: str, status: int, body: Any) -> Operation:
    """A response against the operation's documented responses.

    A 2xx must be a documented status (or ``default``); its JSON body must match the schema.
    Error statuses are checked when the spec documents them with a schema.
    """
    op = operation(method, url)
    responses = op.doc.get("responses") or {}
    key = str(status) if str(status) in responses else None
    if key is None and "default" in responses:
        key = "default"
    if key is None:
        if 200 <= status < 300:
            raise ContractError(f"{op} documents no {status} response (has {sorted(responses)})")
        return op
    found = _json_content(responses[key].get("content"))
    if found is None or (body is None and status == 204):
        return op
    pointer = f"{op.pointer}/responses/{key}/{found[0]}"
    items = ITEM_LISTS.get((op.spec_name, op.template, op.method))
    if items is not None and isinstance(body, dict):
        for i, item in enumerate(body.get(items) or []):
            _validate(op, pointer, item, f"HTTP {status} body {items}[{i}]")
        return op
    _validate(op, pointer, body, f"HTTP {status} body")
    return op


def check_request(
    method: str, url: str, headers: dict[str, str], body: Any, query: dict[str, Any]
) -> Operation:
    """A client's request: required header and query parameters present, JSON body valid."""
    op = operation(method, url)
    present = {k.lower() for k in headers}
    for param in _parameters(op):
        if not param.get("required"):
            continue
        name = param["name"]
        if param.get("in") == "header" and name.lower() not in present:
            raise ContractError(f"{op} requires header {name}")
        if param.get("in") == "query" and name not in query:
            raise ContractError(f"{op} requires query parameter {name}")
    request_body = op.doc.get("requestBody") or {}
    found = _json_content(request_body.get("content"))
    if found is not None and body is not None:
        suffix, schema = found
        if schema["schema"].get("type") == "string":
            return op  # a Java String body: Adobe's generator for "any JSON"
        _validate(op, f"{op.pointer}/requestBody/{suffix}", body, "request body")
    return op


def _parameters(op: Operation) -> list[dict[str, Any]]:
    root = spec(op.spec_name)
    params = [*spec(op.spec_name)["paths"][op.template].get("parameters", [])]
    params += op.doc.get("parameters", [])
    return [_deref(root, p) for p in params]


def _deref(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node
