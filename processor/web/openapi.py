"""The service's OpenAPI 3.1 document, served at /openapi.json. Written out by hand next to the
routes it describes; tests/integration/test_api_fuzz.py runs schemathesis over it, so an
answer that does not match it fails the tests."""

from __future__ import annotations

from typing import Any

from processor import __version__
from processor.signing import DELIVERY_HEADER, HEADER
from processor.status import STATUSES

JSON = "application/json"
TYPE_NAME = r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$"  # not blank, no control characters


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


UNAUTHORIZED = _error("missing, malformed or wrong credentials (nothing was done)")
TOO_LARGE = _error("the body is larger than MAX_REQUEST_BYTES")
UNAVAILABLE = _error(
    "the database is unreachable, or the processor is shutting down; try again (Retry-After)"
)
THROTTLED = _error(
    "too many failed token checks from this address: held off until Retry-After (the token "
    "is not compared meanwhile)"
)
BAD_REQUEST = _error("the body or a parameter is malformed; the message names the problem")

CALL_BODY = {
    "type": "object",
    "required": ["job_id", "lease_token", "payload"],
    "properties": {
        "job_id": {"type": "string", "format": "uuid"},
        "job_type": {"type": "string"},
        "attempt": {"type": "integer", "minimum": 1, "maximum": 10000},
        "lease_token": {"type": "string", "format": "uuid"},
        "user_id": {"type": ["string", "null"]},
        "payload": {"type": "object"},
    },
}


def _handler(summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": (
                "A built-in handler, called by the dispatcher with a signed body "
                f"(`{HEADER}`, bound to this path, and `{DELIVERY_HEADER}`); the bearer "
                "token also works, for calls by hand."
            ),
            "security": [{"signature": []}, {"bearer": []}],
            "requestBody": {"required": True, "content": {JSON: {"schema": CALL_BODY}}},
            "responses": {
                "200": {
                    "description": "done; the job's result",
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "required": ["result"],
                                "properties": {"result": {}},
                            }
                        }
                    },
                },
                "400": BAD_REQUEST,
                "401": UNAUTHORIZED,
                "403": _error("signed for another job type: this route does not run it"),
                "409": _error("the job was cancelled or taken over while it ran; stopped"),
                "413": TOO_LARGE,
                "422": _error("the payload can never succeed (every problem named)"),
                "429": _error(
                    "a provider's rate limit: postponed until Retry-After; or, for a bearer "
                    "call, too many failed token checks from this address"
                ),
                "500": _error("a bug in the handler, named; the attempt is retried"),
                "503": _error("a provider or the storage failed for now; retried with backoff"),
            },
        }
    }


def document(max_claim: int) -> dict[str, Any]:
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "processor",
            "version": __version__,
            "description": "Background jobs out of a Postgres table, run over HTTP.",
        },
        "paths": {
            "/process-jobs": {
                "post": {
                    "summary": "Claim due jobs (at most the free running slots) and run them",
                    "security": bearer,
                    "requestBody": {
                        "required": False,
                        "content": {
                            JSON: {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "limit": {
                                            "type": "integer",
                                            "minimum": 1,
                                            "maximum": max_claim,
                                        },
                                        "job_types": {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": 100,
                                            "items": {
                                                "type": "string",
                                                "minLength": 1,
                                                "maxLength": 200,
                                                "pattern": TYPE_NAME,
                                            },
                                        },
                                        "wait": {"type": "boolean"},
                                        "drain": {"type": "boolean"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "what was claimed (or, with no free slot, busy)",
                            "content": {JSON: {"schema": {"$ref": "#/components/schemas/Claim"}}},
                        },
                        "400": BAD_REQUEST,
                        "401": UNAUTHORIZED,
                        "413": TOO_LARGE,
                        "429": THROTTLED,
                        "503": UNAVAILABLE,
                    },
                }
            },
            "/jobs/{job_id}": {
                "get": {
                    "summary": "One job: status, attempts and errors, result, progress",
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "job_id",
                            "in": "path",
                            "required": True,
                            "description": "the job's id, or its first 8 or more characters",
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "the job",
                            "content": {JSON: {"schema": {"$ref": "#/components/schemas/Job"}}},
                        },
                        "400": BAD_REQUEST,
                        "401": UNAUTHORIZED,
                        "404": _error("no such job"),
                        "429": THROTTLED,
                        "503": UNAVAILABLE,
                    },
                }
            },
            "/process-image": _handler("Make one listing image"),
            "/process-complete-pack": _handler("Make the six listing images (and A+ content)"),
            "/process-aplus": _handler("Make the A+ document and its module images"),
            "/healthz": {
                "get": {
                    "summary": "Whether the database answers (within 1 s)",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "healthy",
                            "content": {
                                JSON: {
                                    "schema": {
                                        "type": "object",
                                        "required": ["status"],
                                        "properties": {
                                            "status": {"const": "ok"},
                                            "running_jobs": {"type": "integer"},
                                        },
                                    }
                                }
                            },
                        },
                        "503": {
                            "description": "the database does not answer",
                            "content": {JSON: {"schema": {"type": "object"}}},
                        },
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus text: the queue and this process's attempts",
                    "security": bearer,
                    "responses": {
                        "200": {
                            "description": "metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "401": UNAUTHORIZED,
                        "429": THROTTLED,
                        "503": UNAVAILABLE,
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {JSON: {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "PROCESSOR_TOKEN"},
                "signature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": HEADER,
                    "description": (
                        "t=<unix>,v2=<HMAC-SHA256 hex of '<t>\\n<METHOD>\\n<path>\\n"
                        "<Processor-Delivery>\\n' + body>, with the built-in handlers' own "
                        "secret and only for their own path and job types"
                    ),
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
                "Claim": {
                    "type": "object",
                    "required": ["claimed", "message"],
                    "properties": {
                        "claimed": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["id", "job_type", "attempt"],
                                "properties": {
                                    "id": {"type": "string", "format": "uuid"},
                                    "job_type": {"type": "string"},
                                    "attempt": {"type": "integer"},
                                },
                            },
                        },
                        "message": {"type": "string"},
                        "busy": {"type": "boolean"},
                        "running": {"type": "integer"},
                        "requeued_expired": {"type": "integer"},
                        "outcomes": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["id", "job_type", "attempt", "status"],
                                "properties": {
                                    "status": {
                                        "enum": [
                                            "completed",
                                            "pending",
                                            "failed",
                                            "waiting",
                                            "lost",
                                        ]
                                    },
                                    "error": {"type": "string"},
                                },
                            },
                        },
                    },
                },
                "Job": {
                    "type": "object",
                    "required": ["id", "job_type", "status", "attempt", "errors"],
                    "properties": {
                        "id": {"type": "string", "format": "uuid"},
                        "job_type": {"type": "string"},
                        "status": {"enum": list(STATUSES)},
                        "attempt": {"type": "integer"},
                        "errors": {"type": "array"},
                        "error_message": {"type": ["string", "null"]},
                        "result": {},
                        "progress": {},
                        "concurrency_key": {
                            "type": ["string", "null"],
                            "description": "its fairness group (null: its user_id is)",
                        },
                        "traceparent": {
                            "type": ["string", "null"],
                            "description": "W3C trace context its enqueue gave: its spans "
                            "continue that trace",
                        },
                        "waiting_because": {
                            "type": ["string", "null"],
                            "description": "why a pending or waiting job is not running yet: "
                            "the dependencies it waits for, not due, its type paused or at its "
                            "cap, its group at its cap, or no free slot; null otherwise",
                        },
                        "workflow_id": {
                            "type": ["string", "null"],
                            "format": "uuid",
                            "description": "the workflow it belongs to (its first job's id)",
                        },
                        "node_name": {"type": ["string", "null"]},
                        "parent_id": {
                            "type": ["string", "null"],
                            "description": "the job whose handler created it as a child",
                        },
                        "depends_on": {
                            "type": ["array", "null"],
                            "items": {"type": "string", "format": "uuid"},
                        },
                        "waiting_on": {
                            "type": ["integer", "null"],
                            "description": "while waiting: how many dependencies are unfinished",
                        },
                        "workflow": {
                            "type": "array",
                            "description": "the jobs of its workflow (200 at most), with their "
                            "status and what each depends on",
                            "items": {"type": "object"},
                        },
                    },
                },
            },
        },
    }
