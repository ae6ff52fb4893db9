"""What a provider call used, as the vendor reported it. Providers call `report(...)` while
they read an answer; processor.providers.metering times the call, sorts its outcome and
records it."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, fields
from typing import Any

from processor.settings import UNITS


@dataclass
class Call:
    """One provider call, filled in as it happens."""

    provider: str
    model: str
    operation: str
    status: str = "ok"  # ok | rate_limited | transient | permanent
    http_status: int | None = None
    duration_ms: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    images: int = 0
    credits: float = 0.0  # remove.bg charges fractions of a credit for small sizes
    error: str | None = None

    def units(self) -> dict[str, float]:
        return {u: getattr(self, u) for u in UNITS if getattr(self, u)}


current_call: ContextVar[Call | None] = ContextVar("provider_call", default=None)


def report(**values: Any) -> None:
    """Providers report what the vendor said (http_status, tokens, images, credits)."""
    call = current_call.get()
    if call is None:
        return
    names = {f.name for f in fields(Call)}
    for key, value in values.items():
        if key not in names or value is None:
            continue
        try:
            setattr(call, key, float(value) if key == "credits" else int(value))
        except (TypeError, ValueError):
            continue  # a unit the vendor garbled is not worth failing a paid call over
