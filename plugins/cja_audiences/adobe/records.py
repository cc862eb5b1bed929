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
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

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


_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "integer": int,
}


def validate(instance: Any, schema: Mapping[str, Any], path: str = "$") -> list[str]:
    """Violations of ``schema`` by ``instance``, each naming its JSON path; empty when valid.

    Covers the keywords :data:`PROFILE_RECORD_SCHEMA` uses; no third-party validator needed.
    """
    errors: list[str] = []
    expected = schema.get("type")
    if expected and not isinstance(instance, _TYPES[expected]):
        return [f"{path}: expected {expected}, got {type(instance).__name__}"]
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{path}: must be {schema['const']!r}")
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} is not one of {schema['enum']}")
    if isinstance(instance, str):
        errors += _string_errors(instance, schema, path)
    if isinstance(instance, list):
        errors += _array_errors(instance, schema, path)
    if isinstance(instance, dict):
        errors += _object_errors(instance, schema, path)
    return errors


def _string_errors(value: str, schema: Mapping[str, Any], path: str) -> list[str]:
    errors = []
    if len(value) < schema.get("minLength", 0):
        errors.append(f"{path}: must not be empty" if value == "" else f"{path}: too short")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{path}: longer than {schema['maxLength']} characters")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    return errors


def _array_errors(items: list[Any], schema: Mapping[str, Any], path: str) -> list[str]:
    errors = []
    if len(items) < schema.get("minItems", 0):
        errors.append(f"{path}: needs at least {schema['minItems']} item(s)")
    if "maxItems" in schema and len(items) > schema["maxItems"]:
        errors.append(f"{path}: at most {schema['maxItems']} item(s)")
    for i, item in enumerate(items):
        errors += validate(item, schema.get("items", {}), f"{path}[{i}]")
    return errors


def _object_errors(obj: dict[str, Any], schema: Mapping[str, Any], path: str) -> list[str]:
    errors = [f"{path}.{key}: required" for key in schema.get("required", ()) if key not in obj]
    if len(obj) < schema.get("minProperties", 0):
        errors.append(f"{path}: needs at least {schema['minProperties']} key(s)")
    if "maxProperties" in schema and len(obj) > schema["maxProperties"]:
        errors.append(f"{path}: at most {schema['maxProperties']} key(s)")
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, value in obj.items():
        if "propertyNames" in schema:
            errors += validate(key, schema["propertyNames"], f"{path} key {key!r}")
        if key in properties:
            errors += validate(value, properties[key], f"{path}.{key}")
        elif extra is False:
            errors.append(f"{path}.{key}: unknown key")
        elif isinstance(extra, Mapping):
            errors += validate(value, extra, f"{path}.{key}")
    return errors


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
    ) -> None:
        self.org_id = org_id
        self.dataset_id = dataset_id
        self.schema_id = schema_id
        self.segment_namespace = segment_namespace
        self.audience_id = audience_id
        self.qualification_time = qualification_time
        self.source_name = source_name
        self._templates: dict[tuple[str, str, bool], tuple[bytes, bytes, bytes]] = {}

    def build(
        self, namespace: str, identity: str, status: str, valid_until: str | None = None
    ) -> dict[str, Any]:
        """The message as a dict (what ``encode`` serializes)."""
        schema_ref = {"id": self.schema_id, "contentType": XDM_CONTENT_TYPE}
        membership = {"status": status, "lastQualificationTime": self.qualification_time}
        if valid_until is not None:
            membership["validUntil"] = valid_until
        return {
            "header": {
                "schemaRef": schema_ref,
                "imsOrgId": self.org_id,
                "datasetId": self.dataset_id,
                "source": {"name": self.source_name},
            },
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
