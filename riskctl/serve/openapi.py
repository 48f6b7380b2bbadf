"""The OpenAPI 3.1 document of ``riskctl serve`` (served at ``GET /openapi.json``), with this instance's
limits and timeout bounds filled in."""

from __future__ import annotations

from typing import Any

from riskctl.config import Settings
from riskctl.core.events import MAX_ID_LENGTH, MAX_TS
from riskctl.core.reply import REPLY_FIELD
from riskctl.serve.callers import parse_api_keys


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def openapi_document(settings: Settings) -> dict[str, Any]:
    s, lim = settings.serve, settings.job.limits()
    ident = {"type": ["string", "integer"], "minLength": 1, "maxLength": MAX_ID_LENGTH}
    fired = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "version": {"type": "integer"},
            "action": {"enum": ["PASS", "REVIEW", "REJECT"]},
            "evidence": {"type": "object", "description": "the values that made the rule fire"},
        },
    }
    #: with keys configured the decision and stats routes need one; /healthz, /readyz and this document do not
    secured: dict[str, Any] = {"security": [{"apiKey": []}]} if parse_api_keys(s.api_keys) else {}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "riskctl decision API",
            "version": "1",
            "description": "Synchronous risk decisions by the running riskctl job (docs/api.md).",
        },
        "paths": {
            "/v1/decisions": {
                "post": {
                    "summary": "Decide one event",
                    "description": (
                        "Produces the event to the events topic and waits for the job's decision. On timeout "
                        f"the fallback ({s.fallback}) answers, marked degraded; the job still decides the "
                        "event. Idempotent by event_id within this instance."
                    ),
                    "parameters": [
                        {
                            "name": "timeout_ms",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "integer",
                                "minimum": s.min_timeout_ms,
                                "maximum": s.max_timeout_ms,
                                "default": s.timeout_ms,
                            },
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Event"}}},
                    },
                    "responses": {
                        "200": {
                            "description": "the job's decision, or the fallback (degraded)",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/Decision"}}
                            },
                        },
                        "400": _error("not JSON, not UTF-8, or an empty body"),
                        "408": _error("the body did not arrive within serve.body_timeout_ms"),
                        "401": _error("no API key, or an unknown one (when serve.api_keys is set)"),
                        "409": _error("event_id already sent with a different content, or by another caller"),
                        "413": _error(f"body larger than {lim.max_event_bytes} bytes"),
                        "415": _error(
                            "Content-Type is not application/json (UTF-8), "
                            "or Content-Encoding is not identity, gzip or deflate"
                        ),
                        "417": _error("an Expect header other than 100-continue"),
                        "422": _error(
                            "an event the job refuses, a reserved field, or a timeout out of bounds"
                        ),
                        "429": _error(
                            "this caller's share is used up (serve.max_in_flight_per_client, "
                            "serve.rate_per_client); Retry-After says when to try again"
                        ),
                        "503": _error("shutting down, or too many requests waiting"),
                    },
                    **secured,
                }
            },
            "/healthz": {
                "get": {"summary": "The process answers", "responses": {"200": {"description": "ok"}}}
            },
            "/readyz": {
                "get": {
                    "summary": "Kafka reachable and a decision round-tripped recently",
                    "responses": {
                        "200": {"description": "ready"},
                        "503": {"description": "not ready, reasons"},
                    },
                }
            },
            "/v1/stats": {
                "get": {
                    "summary": "Counters of this instance",
                    "responses": {
                        "200": {"description": "ok"},
                        "401": _error("no API key, or an unknown one"),
                    },
                    **secured,
                }
            },
        },
        "components": {
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a key of serve.api_keys, as Authorization: Bearer <key>",
                }
            },
            "schemas": {
                "Event": {
                    "type": "object",
                    "description": (
                        f"the event as the job reads it; at most {lim.max_event_bytes} bytes, nesting "
                        f"{lim.max_depth}, strings of {lim.max_string_chars} characters, numbers within "
                        f"1e15, ts at most {lim.max_clock_skew_ms} ms ahead of now; other fields are kept "
                        f"for rules; {REPLY_FIELD!r} is reserved"
                    ),
                    "required": ["event_id", "user_id", "type", "ts"],
                    "properties": {
                        "event_id": ident,
                        "user_id": ident,
                        "type": ident,
                        "ts": {"type": "integer", "minimum": 0, "maximum": MAX_TS},
                        "amount": {"type": ["number", "string", "null"]},
                        "success": {"type": ["boolean", "null"]},
                        "device_id": {"type": ["string", "null"]},
                        "city": {"type": ["string", "null"]},
                        "ip": {"type": ["string", "null"]},
                        "country": {"type": ["string", "null"]},
                    },
                },
                "Decision": {
                    "type": "object",
                    "description": "the job's decision record (docs/engine.md), or the fallback's",
                    "properties": {
                        "kind": {"const": "decision"},
                        "event_id": {"type": "string"},
                        "user_id": {"type": "string"},
                        "type": {"type": "string"},
                        "ts": {"type": "integer"},
                        "action": {"enum": ["PASS", "REVIEW", "REJECT"]},
                        "rules": {"type": "array", "items": fired},
                        "shadow": {"type": "array", "items": fired},
                        "ruleset_version": {"type": ["string", "null"]},
                        "late": {"type": "boolean", "description": "behind the user's newest event"},
                        "too_late": {
                            "type": "boolean",
                            "description": "more than job.lateness_ms behind: counted by no feature",
                        },
                        "duplicate": {
                            "type": "boolean",
                            "description": "the job had decided the same event: its action, no rules",
                        },
                        "ahead_ms": {
                            "type": "integer",
                            "description": "how far ts was ahead of the job's clock: decided at the clock",
                        },
                        "elapsed_ms": {"type": "number"},
                        "degraded": {
                            "type": ["string", "null"],
                            "description": "'timeout', 'produce_failed: ...' or 'shutdown' for a fallback",
                        },
                        "replay": {"type": "boolean", "description": "a retry of an event already sent"},
                        "source": {"enum": ["job", "fallback"]},
                    },
                },
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {
                                "status": {"type": "integer"},
                                "field": {"type": ["string", "null"]},
                                "reason": {"type": "string"},
                            },
                        }
                    },
                },
            },
        },
    }
