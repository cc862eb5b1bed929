"""XDM profile-record envelopes carrying audience membership (adobe-apis.md §4.3, §5.3).

One message per member: the member's identity (primary, in ``identityMap``) and
``segmentMembership.<ns>.<audienceId> = {status, lastQualificationTime, validUntil}``
(``validUntil`` on realized records: without it AEP keeps the membership only 30 days).

Speed matters (millions of records per publish), so each (namespace, status) pair is rendered
once into a JSON template that is checked against :data:`PROFILE_RECORD_SCHEMA`; per record only
the identity value changes, and that value is checked on its own before it is spliced in.
Building every record as a dict and walking the schema would cost more than sending it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jsonschema

from cja_audiences import clock

STATUS_REALIZED = "realized"
STATUS_EXITED = "exited"
XDM_CONTENT_TYPE = "application/vnd.adobe.xed-full+json;version=1"
SOURCE_NAME = "cja-audiences"
MAX_IDENTITY_LENGTH = 1024
_ISO_TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
_CODE = r"^[A-Za-z0-9_.-]{1,64}$"

_NON_EMPTY = {"type": "string", "minLength": 1}
_SCHEMA_REF = {
    "type": "object",
    "required": ["id", "contentType"],
    "additionalProperties": False,
    "properties": {"id": _NON_EMPTY, "contentType": _NON_EMPTY},
}
_MEMBERSHIP = {
    "type": "object",
    "required": ["status", "lastQualificationTime"],
    "additionalProperties": False,
    "properties": {
        "status": {"enum": [STATUS_REALIZED, STATUS_EXITED]},
        "lastQualificationTime": {"type": "string", "pattern": _ISO_TIME},
        "validUntil": {"type": "string", "pattern": _ISO_TIME},
    },
}
_IDENTITY = {
    "type": "object",
    "required": ["id", "primary"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "minLength": 1, "maxLength": MAX_IDENTITY_LENGTH},
        "primary": {"const": True},
    },
}

# The contract every message must meet; a JSON Schema (draft 2020-12 subset, see `validate`).
PROFILE_RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["header", "body"],
    "additionalProperties": False,
    "properties": {
        "header": {
            "type": "object",
            "required": ["schemaRef", "imsOrgId", "datasetId", "source"],
            "additionalProperties": False,
            "properties": {
                "schemaRef": _SCHEMA_REF,
                "imsOrgId": _NON_EMPTY,
                "datasetId": _NON_EMPTY,
                "flowId": _NON_EMPTY,
                "source": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": _NON_EMPTY},
                },
            },
        },
        "body": {
            "type": "object",
            "required": ["xdmMeta", "xdmEntity"],
            "additionalProperties": False,
            "properties": {
                "xdmMeta": {
                    "type": "object",
                    "required": ["schemaRef"],
                    "properties": {"schemaRef": _SCHEMA_REF},
                },
                "xdmEntity": {
                    "type": "object",
                    "required": ["identityMap", "segmentMembership"],
                    "additionalProperties": False,
                    "properties": {
                        # exactly one namespace holding exactly one primary identity
                        "identityMap": {
                            "type": "object",
                            "minProperties": 1,
                            "maxProperties": 1,
                            "propertyNames": {"pattern": _CODE},
                            "additionalProperties": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 1,
                                "items": _IDENTITY,
                            },
                        },
                        "segmentMembership": {
                            "type": "object",
                            "minProperties": 1,
                            "maxProperties": 1,
                            "propertyNames": {"pattern": _CODE},
                            "additionalProperties": {
                                "type": "object",
                                "minProperties": 1,
                                "maxProperties": 1,
                                "propertyNames": {"minLength": 1},
                                "additionalProperties": _MEMBERSHIP,
                            },
                        },
                    },
                },
            },
        },
    },
}


class RecordSchemaError(ValueError):
    """Messages would not meet :data:`PROFILE_RECORD_SCHEMA` (a configuration problem that
    affects every record); lists every violation by path."""


class InvalidRecord(ValueError):
    """One member's identity value cannot be sent; the record is dead-lettered, not the run."""


def validate(instance: Any, schema: Mapping[str, Any]) -> list[str]:
    """Violations of ``schema`` by ``instance`` (JSON Schema, via jsonschema), each naming its
    JSON path in a short sentence; empty when valid."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    return [line for error in errors for line in _describe(error)]


def _json_path(parts: Any) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _describe(error: jsonschema.ValidationError) -> list[str]:
    """One or more readable lines for a jsonschema error."""
    path, value, kind, instance = (
        _json_path(error.absolute_path),
        error.validator_value,
        error.validator,
        error.instance,
    )
    if kind == "required":
        return [f"{path}.{key}: required" for key in value if key not in instance]
    if kind == "additionalProperties":
        known = error.schema.get("properties", {})
        return [f"{path}.{key}: unknown key" for key in instance if key not in known]
    messages = {
        "const": f"must be {value!r}",
        "enum": f"{instance!r} is not one of {value}",
        "type": f"expected {value}, got {type(instance).__name__}",
        "minLength": "must not be empty" if instance == "" else "too short",
        "maxLength": f"longer than {value} characters",
        "pattern": f"{instance!r} does not match {value}",
        "minItems": f"needs at least {value} item(s)",
        "maxItems": f"at most {value} item(s)",
        "minProperties": f"needs at least {value} key(s)",
        "maxProperties": f"at most {value} key(s)",
    }
    if "propertyNames" in error.schema_path:
        path = f"{path} key {instance!r}"
    return [f"{path}: {messages.get(kind, error.message)}"]


def qualification_time(now: datetime | None = None) -> str:
    """``lastQualificationTime`` for a publish: UTC, millisecond precision, ISO 8601."""
    moment = (now or clock.now()).astimezone(UTC)
    return moment.isoformat(timespec="milliseconds")


class RecordFactory:
    """Encodes membership messages for one audience, one org/dataset/schema and one time.

    ``encode`` returns compact JSON bytes, ready to be joined into a batch request body.
    """

    _PLACEHOLDER = "\x00identity\x00"
    _UNTIL = "\x00validUntil\x00"

    def __init__(
        self,
        *,
        org_id: str,
        dataset_id: str | None,
        schema_id: str | None,
        segment_namespace: str,
        audience_id: str,
        qualification_time: str,
        source_name: str = SOURCE_NAME,
        flow_id: str | None = None,
    ) -> None:
        self.org_id = org_id
        self.dataset_id = dataset_id
        self.schema_id = schema_id
        self.segment_namespace = segment_namespace
        self.audience_id = audience_id
        self.qualification_time = qualification_time
        self.source_name = source_name
        self.flow_id = flow_id  # the HTTP API dataflow's id: the spec's header.flowId
        self._templates: dict[tuple[str, str, bool], tuple[bytes, bytes, bytes]] = {}

    def build(
        self, namespace: str, identity: str, status: str, valid_until: str | None = None
    ) -> dict[str, Any]:
        """The message as a dict (what ``encode`` serializes)."""
        schema_ref = {"id": self.schema_id, "contentType": XDM_CONTENT_TYPE}
        membership = {"status": status, "lastQualificationTime": self.qualification_time}
        if valid_until is not None:
            membership["validUntil"] = valid_until
        header: dict[str, Any] = {
            "schemaRef": schema_ref,
            "imsOrgId": self.org_id,
            "datasetId": self.dataset_id,
            "source": {"name": self.source_name},
        }
        if self.flow_id:
            header["flowId"] = self.flow_id
        return {
            "header": header,
            "body": {
                "xdmMeta": {"schemaRef": dict(schema_ref)},
                "xdmEntity": {
                    "identityMap": {namespace: [{"id": identity, "primary": True}]},
                    "segmentMembership": {self.segment_namespace: {self.audience_id: membership}},
                },
            },
        }

    def encode(
        self, namespace: str, identity: str, status: str, valid_until: str | None = None
    ) -> bytes:
        """Compact JSON for one member; raises ``InvalidRecord`` for an unusable identity."""
        problem = identity_problem(identity)
        if problem:
            raise InvalidRecord(f"$.body.xdmEntity.identityMap.{namespace}[0].id: {problem}")
        prefix, middle, suffix = self._template(namespace, status, valid_until is not None)
        body = prefix + json.dumps(identity).encode() + middle
        return body + f'"{valid_until}"'.encode() + suffix if valid_until else body

    def _template(self, namespace: str, status: str, until: bool) -> tuple[bytes, bytes, bytes]:
        key = (namespace, status, until)
        template = self._templates.get(key)
        if template is None:
            self.check(namespace, status, self.qualification_time if until else None)
            message = self.build(
                namespace, self._PLACEHOLDER, status, self._UNTIL if until else None
            )
            text = json.dumps(message, separators=(",", ":"))
            prefix, rest = text.split(json.dumps(self._PLACEHOLDER))
            middle, suffix = rest.split(json.dumps(self._UNTIL)) if until else (rest, "")
            template = self._templates[key] = (prefix.encode(), middle.encode(), suffix.encode())
        return template

    def check(self, namespace: str, status: str, valid_until: str | None = None) -> None:
        """Validate the message shape for this namespace and status against the schema."""
        errors = validate(
            self.build(namespace, "sample", status, valid_until), PROFILE_RECORD_SCHEMA
        )
        if errors:
            raise RecordSchemaError(
                "membership messages would not meet the XDM profile-record schema "
                "(check the AEP connection's org_id, dataset_id, schema_id and "
                "segment_namespace, and the audience's identity namespace): " + "; ".join(errors)
            )


def identity_problem(identity: Any) -> str | None:
    """Why an identity value cannot be sent, or None when it can."""
    if not isinstance(identity, str):
        return f"expected a string, got {type(identity).__name__}"
    if not identity.strip():
        return "empty identity value"
    if len(identity) > MAX_IDENTITY_LENGTH:
        return f"longer than {MAX_IDENTITY_LENGTH} characters"
    return None
