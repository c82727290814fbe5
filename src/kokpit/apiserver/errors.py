"""Kubernetes `Status` errors for the embedded API server.

Every failure a client sees is a `metav1.Status` object with a reason, a message that names what to fix,
details (name, group, kind, causes) and the HTTP code.  Raising :class:`APIError` anywhere below the HTTP
layer is the one way to produce such an answer, so no request can end in a bare 500 with a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "APIError",
    "Cause",
    "already_exists",
    "bad_request",
    "conflict",
    "expired",
    "forbidden",
    "internal",
    "invalid",
    "method_not_allowed",
    "not_found",
    "too_large",
    "unauthorized",
    "unsupported_media_type",
]


@dataclass(frozen=True)
class Cause:
    """One cause of an error: `field` is a JSON path such as `metadata.name` or `spec.containers[0].image`.

    `reason` follows Kubernetes' CauseType strings: FieldValueRequired, FieldValueInvalid,
    FieldValueNotSupported, FieldValueDuplicate, FieldValueTooLong, FieldValueTypeInvalid,
    FieldValueForbidden, FieldValueUnknown (unknown field under fieldValidation=Strict).
    """

    field: str
    message: str
    reason: str = "FieldValueInvalid"

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


@dataclass
class APIError(Exception):
    """An error that becomes a Kubernetes Status response."""

    code: int
    reason: str
    message: str
    name: str | None = None
    group: str | None = None
    kind: str | None = None
    causes: list[Cause] = field(default_factory=list)
    retry_after: int | None = None

    def __str__(self) -> str:
        return f"{self.code} {self.reason}: {self.message}"

    def status(self) -> dict[str, Any]:
        details: dict[str, Any] = {}
        if self.name is not None:
            details["name"] = self.name
        if self.group is not None:
            details["group"] = self.group
        if self.kind is not None:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = [c.to_dict() for c in self.causes]
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if details:
            out["details"] = details
        return out


def _resource(kind: str | None, group: str | None) -> str:
    if not kind:
        return "object"
    return f"{kind}.{group}" if group else kind


def bad_request(message: str, causes: list[Cause] | None = None) -> APIError:
    return APIError(400, "BadRequest", message, causes=causes or [])


def unauthorized(message: str = "Unauthorized") -> APIError:
    return APIError(401, "Unauthorized", message)


def forbidden(message: str, name: str | None = None, group: str | None = None,
              kind: str | None = None) -> APIError:
    return APIError(403, "Forbidden", message, name=name, group=group, kind=kind)


def not_found(resource: str, name: str, group: str | None = None) -> APIError:
    """`resource` is the plural name (pods, machines.kokpit.io), as kube-apiserver words it."""
    res = f"{resource}.{group}" if group else resource
    return APIError(404, "NotFound", f'{res} "{name}" not found', name=name, group=group or "",
                    kind=resource)


def already_exists(resource: str, name: str, group: str | None = None) -> APIError:
    res = f"{resource}.{group}" if group else resource
    return APIError(409, "AlreadyExists", f'{res} "{name}" already exists', name=name,
                    group=group or "", kind=resource)


def conflict(resource: str, name: str, group: str | None = None, message: str | None = None,
             causes: list[Cause] | None = None) -> APIError:
    res = f"{resource}.{group}" if group else resource
    msg = message or ("the object has been modified; please apply your changes to the latest version "
                      "and try again")
    return APIError(409, "Conflict", f'Operation cannot be fulfilled on {res} "{name}": {msg}', name=name,
                    group=group or "", kind=resource, causes=causes or [])


def invalid(kind: str | None, name: str | None, causes: list[Cause], group: str | None = None) -> APIError:
    """422 Invalid: the message lists every cause with its field, like kube-apiserver does."""
    parts = [f"{c.field}: {c.message}" if c.field else c.message for c in causes]
    if len(parts) == 1:
        body = parts[0]
    else:
        body = "[" + ", ".join(parts) + "]"
    msg = f'{_resource(kind, group)} "{name or ""}" is invalid: {body}'
    return APIError(422, "Invalid", msg, name=name, group=group or "", kind=kind, causes=causes)


def method_not_allowed(message: str) -> APIError:
    return APIError(405, "MethodNotAllowed", message)


def unsupported_media_type(content_type: str) -> APIError:
    return APIError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                    f"accepted media types include: application/json, application/yaml, "
                    f"application/apply-patch+yaml, application/json-patch+json, "
                    f"application/merge-patch+json, application/strategic-merge-patch+json (got {content_type!r})")


def too_large(limit: int) -> APIError:
    return APIError(413, "RequestEntityTooLarge", f"the request body is too large: limit is {limit} bytes")


def expired(message: str) -> APIError:
    """410 Expired: a watch or continue token from before the compaction window."""
    return APIError(410, "Expired", message)


def internal(message: str) -> APIError:
    return APIError(500, "InternalError", f"Internal error occurred: {message}")
