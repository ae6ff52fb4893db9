"""Times as a person reads them, shared by the command line and the status page."""

from __future__ import annotations

from datetime import UTC, datetime


def ago(when: datetime | None) -> str:
    """'5 s ago', '3 min ago', '2 h ago', '4 d ago' (the CLI and the status page)."""
    if when is None:
        return ""
    seconds = (datetime.now(UTC) - when).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{max(seconds, 0):.0f} s ago"
