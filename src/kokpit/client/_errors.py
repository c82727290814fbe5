"""Errors the client raises, carrying the server's ``Status`` so callers branch on code/reason, not text."""

from __future__ import annotations

from typing import Any

# one class for both transports: raised for lightkube/httpx2 requests here and by kokpit._lib.http1's pool
from kokpit._lib.http1 import TransportError

__all__ = [
    "AlreadyExistsError",
    "ApiError",
    "ConflictError",
    "NotFoundError",
    "ResourceExpiredError",
    "TransportError",
]


class ApiError(Exception):
    """The server answered with a failure ``Status`` (or a non-2xx code)."""

    def __init__(
        self, code: int, status: dict[str, Any] | None = None, retry_after: float | None = None
    ) -> None:
        self.code = code
        self.status: dict[str, Any] = status or {}
        self.reason: str = str(self.status.get("reason") or "")
        self.message: str = str(self.status.get("message") or f"HTTP {code}")
        self.retry_after = retry_after
        super().__init__(f"{code} {self.reason}: {self.message}")

    @staticmethod
    def from_status(code: int, status: dict[str, Any] | None, retry_after: float | None = None) -> ApiError:
        """The most specific subclass for this answer."""
        reason = (status or {}).get("reason")
        if code == 404:
            return NotFoundError(code, status, retry_after)
        if code == 410 or reason in ("Expired", "Gone"):
            return ResourceExpiredError(code, status, retry_after)
        if code == 409 and reason == "AlreadyExists":
            return AlreadyExistsError(code, status, retry_after)
        if code == 409:
            return ConflictError(code, status, retry_after)
        return ApiError(code, status, retry_after)


class NotFoundError(ApiError):
    """404: the object (or its namespace) does not exist."""


class ConflictError(ApiError):
    """409 Conflict: the object changed since it was read (stale resourceVersion)."""


class AlreadyExistsError(ConflictError):
    """409 AlreadyExists on create."""


class ResourceExpiredError(ApiError):
    """410 Expired/Gone: the resourceVersion or continue token is compacted away; relist."""

