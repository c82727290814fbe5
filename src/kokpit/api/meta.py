"""Shared pieces of every kokpit kind: the model base, an ObjectMeta subset and the Condition.

Every kind is a pydantic model whose Python names are snake_case and whose wire names are Kubernetes'
camelCase, so operators read typed objects while the JSON on the wire (and the generated CRD schema) looks
exactly like a hand-written Kubernetes API.  Conditions are the one status shape every kind shares: code
decides on conditions, never on phases (DESIGN.md, convention 3).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "Condition",
    "ConditionStatus",
    "FailureRecord",
    "KokpitModel",
    "ObjectMeta",
    "ResourceModel",
    "SpecModel",
    "StatusModel",
]


class KokpitModel(BaseModel):
    """Base of every kokpit API model: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore",
                              use_enum_values=False, validate_default=False)

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict as the API server stores it (camelCase, unset optionals left out)."""
        out: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return out

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Self:
        return cls.model_validate(data)


class SpecModel(KokpitModel):
    """Intent written by people and tools: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class StatusModel(KokpitModel):
    """Observation written by controllers: tolerant of fields a newer controller added."""

    model_config = ConfigDict(extra="ignore")


class ObjectMeta(KokpitModel):
    """The subset of metav1.ObjectMeta kokpit code reads; everything else is kept but untyped."""

    model_config = ConfigDict(extra="allow")

    name: str = ""
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    finalizers: list[str] = Field(default_factory=list)


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(StatusModel):
    """metav1.Condition: lastTransitionTime moves only on a status flip; observedGeneration dates it."""

    type: str = Field(min_length=1, max_length=316)
    status: ConditionStatus
    reason: str = ""
    message: str = Field(default="", max_length=32768)
    last_transition_time: str | None = None
    observed_generation: int | None = Field(default=None, ge=0)


class FailureRecord(StatusModel):
    """What an operator remembers of something that keeps failing (an install, a Pod, a probe), in status so
    that a restarted operator resumes the same backoff and the same "failing since" timer
    (:class:`kokpit.runtime.failures.FailureMemory` reads and writes it)."""

    name: str = Field(min_length=1, max_length=316, description="What fails, e.g. install/kubelet or "
                                                                 "pod/c1-simulator-0.")
    count: int = Field(default=0, ge=0, description="Failures in a row.")
    first_failure_time: str = Field(description="When this run of failures began (MicroTime).")
    last_failure_time: str | None = None
    next_retry_time: str | None = Field(default=None, description="No retry before this time (backoff).")
    message: str = Field(default="", max_length=1024)
    signature: str = Field(default="", max_length=1024, description="Identifies one failure so that "
                                                                    "seeing it again is not counted twice.")


class ResourceModel(KokpitModel):
    """A whole object (apiVersion, kind, metadata, spec, status); subclasses set ``KIND_INFO``.

    ``KIND_INFO`` is a :class:`kokpit.api.crdgen.KindInfo`; it is typed ``Any`` here so this module does not
    depend on the generator.
    """

    KIND_INFO: ClassVar[Any]

    api_version: str = ""
    kind: str = ""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    def to_wire(self) -> dict[str, Any]:
        out = super().to_wire()
        info = type(self).KIND_INFO
        out["apiVersion"] = self.api_version or info.api_version
        out["kind"] = self.kind or info.kind
        return out
