"""Site repairs: reboot, OS reinstall and power cycle differ per site (IPMI, PXE, a cloud API), so kokpit
calls a configured command or webhook with one documented contract instead of knowing any of them.

The contract (also in docs/nodes.md):

request (JSON; on the command's stdin, or the webhook's POST body)::

    {"apiVersion": "kokpit.io/v1alpha1", "kind": "RepairRequest", "requestId": "<stable id>",
     "node": "<node name>", "action": "reboot" | "reinstall" | "power-cycle", "reason": "<why>",
     "requestedAt": "<RFC 3339>"}

The command also gets ``action`` and ``node`` as its two arguments.  ``requestId`` is the idempotency key: the
same id is sent again when kokpit is not sure the first call arrived, and must not repair twice.

answer: the webhook answers 2xx with ``{"accepted": bool, "message": str, "reference": str}`` (reference: the
site's ticket or job id); the command exits 0 for accepted (stdout: that JSON, or one line of message) and
non-zero for refused (stderr: why).  A timeout, a connection error or a 5xx is *not* an answer: the result
says ``retryable`` and the caller tries again later with the same ``requestId``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

__all__ = ["REPAIR_ACTIONS", "RepairResult", "SiteRepair"]

REPAIR_ACTIONS = ("reboot", "reinstall", "power-cycle")


@dataclass(frozen=True)
class RepairResult:
    accepted: bool
    message: str = ""
    reference: str = ""
    retryable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "message": self.message, "reference": self.reference,
                "retryable": self.retryable}


def _answer(text: str, default_ok: bool) -> RepairResult:
    text = text.strip()
    with contextlib.suppress(ValueError, AttributeError):
        d = json.loads(text)
        if isinstance(d, dict):
            return RepairResult(bool(d.get("accepted", default_ok)), str(d.get("message") or ""),
                                str(d.get("reference") or ""))
    return RepairResult(default_ok, text.splitlines()[0] if text else "")


class SiteRepair:
    """Calls the site's repair ``command`` (argv) or ``webhook`` (URL); exactly one is configured."""

    def __init__(self, *, command: list[str] | None = None, webhook: str | None = None, timeout: float = 60.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        if bool(command) == bool(webhook):
            raise ValueError("configure exactly one of a repair command or a repair webhook")
        self.command = command
        self.webhook = webhook
        self.timeout = timeout
        self.ssl_context = ssl_context

    @staticmethod
    def request(request_id: str, node: str, action: str, reason: str, now: dt.datetime | None = None
                ) -> dict[str, Any]:
        if action not in REPAIR_ACTIONS:
            raise ValueError(f"action must be one of {', '.join(REPAIR_ACTIONS)}, not {action!r}")
        if not request_id:
            raise ValueError("requestId is required (the idempotency key)")
        at = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"apiVersion": "kokpit.io/v1alpha1", "kind": "RepairRequest", "requestId": request_id,
                "node": node, "action": action, "reason": reason, "requestedAt": at}

    async def call(self, request_id: str, node: str, action: str, reason: str) -> RepairResult:
        body = self.request(request_id, node, action, reason)
        if self.command:
            return await self._run(body)
        return await asyncio.to_thread(self._post, body)

    async def _run(self, body: dict[str, Any]) -> RepairResult:
        assert self.command
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command, body["action"], body["node"], stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as e:
            return RepairResult(False, f"cannot run repair command {self.command[0]}: {e.strerror}", retryable=True)
        try:
            async with asyncio.timeout(self.timeout):
                out, err = await proc.communicate(json.dumps(body).encode())
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return RepairResult(False, f"repair command timed out after {self.timeout:g}s", retryable=True)
        if proc.returncode == 0:
            return _answer(out.decode(errors="replace"), True)
        why = (err or out).decode(errors="replace").strip() or f"exit status {proc.returncode}"
        return RepairResult(False, why.splitlines()[-1])

    def _post(self, body: dict[str, Any]) -> RepairResult:
        assert self.webhook
        req = urllib.request.Request(self.webhook, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ssl_context) as resp:
                return _answer(resp.read().decode(errors="replace"), True)
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            if e.code >= 500:
                return RepairResult(False, f"repair webhook answered {e.code}: {text[:200]}", retryable=True)
            return RepairResult(False, f"repair webhook answered {e.code}: {_answer(text, False).message or e.reason}")
        except (urllib.error.URLError, OSError) as e:
            return RepairResult(False, f"repair webhook unreachable: {getattr(e, 'reason', e)}", retryable=True)
