"""processor: background jobs out of a Postgres table, driven by pg_cron over HTTP."""

__version__ = "0.1.0"
