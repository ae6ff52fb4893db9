"""The processor's own errors. Lower-level errors are translated where they enter the code.

ProcessorError
├── ConfigError          a setting is missing or malformed
├── DatabaseError        PostgreSQL unreachable or a query failed
│   └── MigrationError   a migration could not be applied, or was edited after it was
└── ClusterError         the private local PostgreSQL could not be set up or started
"""

from __future__ import annotations


class ProcessorError(Exception):
    """Base of every error the processor raises on purpose."""


class ConfigError(ProcessorError):
    """A setting is missing or malformed; the message names it."""


class DatabaseError(ProcessorError):
    """PostgreSQL could not be reached, or a query failed. `status` is the HTTP answer it
    deserves: 503 for an outage (the caller may try again), 4xx when the database refused the
    input itself (the caller must change it), 500 for a query that should never fail."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status

    @property
    def outage(self) -> bool:
        return self.status == 503

    @property
    def reason(self) -> str:
        """The database's own words, without the name of the query that met them."""
        return str(self).split(" failed: ", 1)[-1]


class MigrationError(DatabaseError):
    """A migration could not be applied, or an applied one was changed afterwards."""


class ClusterError(ProcessorError):
    """The private local PostgreSQL cluster could not be created or started."""
