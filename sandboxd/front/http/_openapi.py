"""The OpenAPI 3.1 document of ``/v1``, served at ``/v1/openapi.json``.

Written by hand, as data: the API is small, and a test
(tests/http/test_http_openapi.py) validates the document itself and every
real response of the suite's requests against it, so it cannot drift from
the code.
"""

from __future__ import annotations

from typing import Any

import sandboxd_protocol as proto
from sandboxd import __version__
from sandboxd.compare import COMPARE_MODES
from sandboxd.limits import Limits
from sandboxd.result import VERDICTS
from sandboxd_protocol import DEFAULT_SIZE_LIMITS, ERROR_CODES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any] | str, description: str) -> dict[str, Any]:
    if isinstance(schema, str):
        schema = _ref(schema)
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json("Error", description)


NULLABLE_STRING = {"type": ["string", "null"]}
_SIZES = {s.name for s in proto.LIMITS if s.unit is proto.Unit.BYTES}

LIMITS = {
    "type": "object",
    "description": "Overrides of the profile's limits: seconds as numbers, sizes in bytes "
                   "(a number, or a string with K, M or G). Each is checked against the "
                   "profile's max_limits (limit_exceeded).",
    "additionalProperties": False,
    "properties": {
        key: ({"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]}
              if key in _SIZES else {"type": "number", "exclusiveMinimum": 0})
        for key in Limits.__dataclass_fields__},
}

LIMIT_VALUES = {
    "type": "object", "additionalProperties": False,
    "required": list(Limits.__dataclass_fields__),
    "properties": {key: {"type": "integer" if key in _SIZES or key in ("pids", "open_files")
                         else "number"} for key in Limits.__dataclass_fields__},
}

DATA = {
    "description": "Bytes, said per field: a string is UTF-8 text; {\"text\": ...} the same; "
                   "{\"base64\": ...} any bytes.",
    "oneOf": [
        {"type": "string"},
        {"type": "object", "required": ["text"], "additionalProperties": False,
         "properties": {"text": {"type": "string"}}},
        {"type": "object", "required": ["base64"], "additionalProperties": False,
         "properties": {"base64": {"type": "string", "contentEncoding": "base64"}}},
    ],
}

ARGV = {"type": "array", "minItems": 1, "maxItems": DEFAULT_SIZE_LIMITS.max_argv,
        "items": {"type": "string"}}

JOB = {
    "type": "object", "required": ["profile"], "additionalProperties": False,
    "properties": {
        "profile": {"type": "string", "description": "a profile's name (GET /v1/profiles)"},
        "files": {"type": "object", "additionalProperties": _ref("Data"),
                  "description": "path in /box (relative, no '..') -> content"},
        "stdin": _ref("Data"),
        "argv": {**ARGV, "description": "the run step's argv (default: the profile's)"},
        "env": {"type": "object", "additionalProperties": {"type": "string"}},
        "limits": _ref("Limits"),
        "compile": {"type": "object", "additionalProperties": False, "properties": {
            "argv": ARGV, "limits": _ref("Limits")}},
        "tests": {"type": "array", "minItems": 1, "maxItems": DEFAULT_SIZE_LIMITS.max_tests,
                  "items": _ref("Test"),
                  "description": "one run per test, each in a fresh container, after one "
                                 "compile; no job-level stdin or expected_output then"},
        "expected_output": {"oneOf": [_ref("Data"), {"type": "null"}]},
        "compare": {"enum": list(COMPARE_MODES), "default": "trailing_ws"},
        "float_tolerance": {"type": ["number", "null"], "minimum": 0,
                            "description": "only with compare 'tokens'"},
        "stop_on_failure": {"type": "boolean", "default": False},
        "cpuset_pin": {"type": "boolean", "default": False},
        "warm_runtime": {"type": ["boolean", "null"], "default": None,
                         "description": "the profile's warm runtime: false = the plain "
                                        "start, true = also when judged, null = the "
                                        "server's choice"},
        "memory_mode": {"enum": ["peak", "address_space", None], "default": None,
                        "description": "how the run steps' memory limit counts: the "
                                       "cgroup's touched memory (peak) or also RLIMIT_AS "
                                       "per process (address_space); null = the profile's"},
        "checker": {"oneOf": [_ref("Program"), {"type": "null"}],
                    "description": "judges each test's output instead of compare, as "
                                   "testlib's checkers do (PROTOCOL.md 4.1)"},
        "generators": {"type": ["array", "null"], "maxItems": 1024, "items": _ref("Program"),
                       "description": "programs that make tests (a test's generator)"},
        "batches": {"type": ["array", "null"], "minItems": 1, "items": _ref("Batch"),
                    "description": "subtasks: every test in exactly one"},
        "interactor": {"oneOf": [_ref("Program"), {"type": "null"}],
                       "description": "an interactive problem: each test runs this program "
                                      "beside the job's, stdout wired to stdin both ways; "
                                      "the test's stdin and expected_output are its files "
                                      "input.txt and answer.txt; its exit code (testlib's) "
                                      "decides"},
        "network": {"type": ["object", "null"], "default": None,
                    "properties": {"allow": {"type": "array", "maxItems": 32,
                                             "items": {"type": "string",
                                                       "pattern": "^[A-Za-z0-9._-]+:[0-9]+$"}}},
                    "additionalProperties": False,
                    "description": "outbound TCP to these host:port only (and DNS for the "
                                   "names); [] = none; null = the profile's. Refused unless "
                                   "the server's egress_allow permits it"},
        "workspace": {"type": ["string", "null"],
                      "description": "an id from POST /v1/workspaces: the archive unpacked "
                                     "into /box (used once; docs/ci.md)"},
        "caches": {"type": "array", "maxItems": 16, "items": {"type": "string"},
                   "description": "the operator's read-only caches, at /cache/<name>"},
        "artifacts": {"type": ["array", "null"], "maxItems": 64, "items": {"type": "string"},
                      "description": "globs relative to /box; matches come back in each "
                                     "step's artifacts"},
    },
}

PROGRAM = {
    "type": "object", "required": ["profile"], "additionalProperties": False,
    "description": "A problem's own program (checker, generator, interactor): compiled "
                   "in its profile, run in containers of its own under its own limits.",
    "properties": {
        "profile": {"type": "string"},
        "files": {"type": "object", "additionalProperties": _ref("Data")},
        "argv": {"oneOf": [ARGV, {"type": "null"}]},
        "limits": _ref("Limits"),
    },
}

BATCH = {
    "type": "object", "required": ["name", "tests"], "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"},
        "tests": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
        "points": {"type": "number", "minimum": 0, "default": 1.0},
        "stop_on_failure": {"type": "boolean", "default": False},
        "depends": {"type": ["array", "null"], "items": {"type": "string"}},
    },
}

BATCH_RESULT = {
    "type": "object", "additionalProperties": False,
    "required": ["name", "verdict", "score", "points"],
    "properties": {"name": {"type": "string"}, "verdict": {"enum": list(VERDICTS)},
                   "score": {"type": "number"}, "points": {"type": "number"}},
}

TEST = {
    "type": "object", "additionalProperties": False, "properties": {
        "stdin": _ref("Data"), "expected_output": {"oneOf": [_ref("Data"), {"type": "null"}]},
        "limits": _ref("Limits"), "repeat": {"type": "integer", "minimum": 1, "maximum": 1000},
        "generator": {"type": ["integer", "null"], "minimum": 0,
                      "description": "index in generators: its stdout is this test's stdin"},
        "generator_args": {"oneOf": [ARGV, {"type": "null"}]},
    },
}

REPEAT = {
    "type": "object", "additionalProperties": False,
    "required": ["runs", "cpu_time_min", "cpu_time_median", "cpu_time_max", "wall_time_min",
                 "wall_time_median", "wall_time_max", "memory_peak_max", "chosen"],
    "properties": {
        "runs": {"type": "integer"}, "cpu_time_min": {"type": "number"},
        "cpu_time_median": {"type": "number"}, "cpu_time_max": {"type": "number"},
        "wall_time_min": {"type": "number"}, "wall_time_median": {"type": "number"},
        "wall_time_max": {"type": "number"}, "memory_peak_max": {"type": "integer"},
        "chosen": {"type": "integer"},
    },
}

STEP = {
    "type": "object", "additionalProperties": False,
    "description": "One step's result: the fields of the msgpack protocol's StepResult. "
                   "stdout and stderr are text (bytes that are not UTF-8 become U+FFFD); "
                   "stdout_b64 and stderr_b64 carry the exact bytes only then.",
    "required": ["verdict", "reason", "exit_code", "signal", "cpu_time", "user_time",
                 "sys_time", "wall_time", "memory_peak", "oom_killed", "stdout", "stderr",
                 "stdout_truncated", "stderr_truncated", "repeat"],
    "properties": {
        "verdict": {"enum": list(VERDICTS)},
        "reason": NULLABLE_STRING,
        "exit_code": {"type": ["integer", "null"]},
        "signal": {"type": ["integer", "null"]},
        "cpu_time": {"type": "number"}, "user_time": {"type": "number"},
        "sys_time": {"type": "number"}, "wall_time": {"type": "number"},
        "memory_peak": {"type": "integer"}, "oom_killed": {"type": "boolean"},
        "stdout": {"type": "string"}, "stdout_b64": {"type": "string"},
        "stderr": {"type": "string"}, "stderr_b64": {"type": "string"},
        "stdout_truncated": {"type": "boolean"}, "stderr_truncated": {"type": "boolean"},
        "repeat": {"oneOf": [_ref("Repeat"), {"type": "null"}]},
        "score": {"type": ["number", "null"],
                  "description": "judged jobs: the fraction of the test's points earned"},
        "checker_message": NULLABLE_STRING,
        "checker": {"oneOf": [_ref("CheckerRun"), {"type": "null"}]},
        "interactor": {"oneOf": [_ref("StepResult"), {"type": "null"}],
                       "description": "an interactive test: the interactor's own run"},
        "artifacts": {"type": "object", "additionalProperties": {"type": "string"},
                      "description": "present when the job named artifacts: path -> base64"},
        "artifacts_truncated": {"type": "boolean"},
    },
}

_RUN_FIELDS = ["verdict", "reason", "exit_code", "signal", "cpu_time", "user_time",
               "sys_time", "wall_time", "memory_peak", "oom_killed"]
CHECKER_RUN = {
    "type": "object", "additionalProperties": False, "required": _RUN_FIELDS,
    "description": "The checker's own run: its verdict and accounting (its words are the "
                   "step's checker_message).",
    "properties": {k: v for k, v in STEP["properties"].items() if k in _RUN_FIELDS},
}

JOB_RESULT = {
    "type": "object", "additionalProperties": False,
    "required": ["id", "state", "verdict", "compile", "steps"],
    "properties": {
        "id": {"type": "string"},
        "state": {"const": "done"},
        "verdict": {"enum": list(VERDICTS),
                    "description": "a failed compile's, else the first failed step's, else ok"},
        "compile": {"oneOf": [_ref("StepResult"), {"type": "null"}]},
        "steps": {"type": "array", "items": _ref("StepResult"),
                  "description": "one per test (one for a job without tests); empty when "
                                 "the compile failed"},
        "score": {"type": "number", "description": "judged jobs: points earned"},
        "batches": {"type": ["array", "null"], "items": _ref("BatchResult")},
    },
}

JOB_PENDING = {
    "type": "object", "additionalProperties": False, "required": ["id", "state"],
    "properties": {"id": {"type": "string"}, "state": {"enum": ["queued", "running"]},
                   "profile": {"type": "string"}},
}

JOB_FAILED = {
    "type": "object", "additionalProperties": False,
    "required": ["id", "state", "error", "message"],
    "properties": {"id": {"type": "string"}, "state": {"const": "failed"},
                   "error": {"enum": sorted(ERROR_CODES)}, "message": {"type": "string"}},
}

ERROR = {
    "type": "object", "additionalProperties": False, "required": ["error", "message"],
    "properties": {"error": {"enum": sorted(ERROR_CODES),
                             "description": "the msgpack protocol's error code"},
                   "message": {"type": "string"}},
}

PROFILE = {
    "type": "object", "additionalProperties": False,
    "required": ["name", "description", "compiled", "entry", "version", "available",
                 "unavailable_reason", "default_limits", "max_limits"],
    "properties": {
        "name": {"type": "string"}, "description": {"type": "string"},
        "compiled": {"type": "boolean"}, "entry": {"type": "string"},
        "version": NULLABLE_STRING, "available": {"type": "boolean"},
        "unavailable_reason": NULLABLE_STRING,
        "default_limits": _ref("LimitValues"), "max_limits": _ref("LimitValues"),
    },
}

STATS = {
    "type": "object", "additionalProperties": False,
    "required": ["uptime", "jobs_queued", "jobs_running", "jobs_completed", "pools",
                 "counters"],
    "properties": {
        "uptime": {"type": "number"}, "jobs_queued": {"type": "integer"},
        "jobs_running": {"type": "integer"}, "jobs_completed": {"type": "integer"},
        "pools": {"type": "array", "items": {
            "type": "object", "additionalProperties": False,
            "required": ["profile", "warm", "target"],
            "properties": {"profile": {"type": "string"}, "warm": {"type": "integer"},
                           "target": {"type": "integer"}}}},
        "counters": {"type": "object", "additionalProperties": {"type": "number"}},
    },
}

PS = {
    "type": "object", "additionalProperties": False, "required": ["jobs"],
    "properties": {"jobs": {"type": "array", "items": {
        "type": "object", "additionalProperties": False,
        "required": ["ref", "id", "profile", "client", "state", "elapsed", "cpu_time", "memory"],
        "properties": {
            "ref": {"type": "string", "description": "what POST /v1/kill/{ref} takes"},
            "id": {"type": "string"}, "profile": {"type": "string"},
            "client": {"type": "string"}, "state": {"enum": ["queued", "running"]},
            "elapsed": {"type": "number"}, "cpu_time": {"type": ["number", "null"]},
            "memory": {"type": ["integer", "null"]}}}}},
}

_BUSY = _error("server_busy (the queue is full, too many requests at once) or shutting_down")
_AUTH = _error("unauthorized: no valid token")
_MANY = _error("too_many_requests: past http_token_concurrency for this token")
_COMMON = {"401": _AUTH, "429": _MANY, "503": _BUSY}
_JOB_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]

PATHS: dict[str, Any] = {
    "/v1/health": {"get": {
        "summary": "Whether the daemon serves (no token needed)", "security": [],
        "responses": {
            "200": _json("Health", "serving"),
            "503": _json("Health", "draining: stopping after SIGTERM")}}},
    "/v1/openapi.json": {"get": {
        "summary": "This document",
        "responses": {"200": {"description": "OpenAPI 3.1", "content": {
            "application/json": {"schema": {"type": "object"}}}}, **_COMMON}}},
    "/v1/profiles": {"get": {
        "summary": "Every profile, unavailable ones with their reason",
        "responses": {"200": _json({"type": "object", "additionalProperties": False,
                                    "required": ["profiles"],
                                    "properties": {"profiles": {
                                        "type": "array", "items": _ref("Profile")}}},
                                   "the profiles"), **_COMMON}}},
    "/v1/stats": {"get": {
        "summary": "The daemon's counters (as sandboxctl stats)",
        "responses": {"200": _json("Stats", "statistics"), **_COMMON}}},
    "/v1/ps": {"get": {
        "summary": "Jobs queued and running, of every client",
        "responses": {"200": _json("Ps", "the jobs"), **_COMMON}}},
    "/v1/kill/{ref}": {"post": {
        "summary": "End any client's job (as sandboxctl kill); its submitter gets cancelled",
        "parameters": [{"name": "ref", "in": "path", "required": True,
                        "schema": {"type": "string"}, "description": "a ref from GET /v1/ps"}],
        "responses": {
            "200": _json({"type": "object", "additionalProperties": False,
                          "required": ["job", "found"],
                          "properties": {"job": {"type": "string"},
                                         "found": {"const": True}}}, "killed"),
            "404": _error("unknown_job: no such job in flight"), **_COMMON}}},
    "/v1/jobs": {"post": {
        "summary": "Run a job: wait for its result, or get an id to poll (wait=false)",
        "parameters": [{"name": "wait", "in": "query", "required": False,
                        "schema": {"type": "boolean", "default": True}}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": _ref("Job")}}},
        "responses": {
            "200": _json("JobResult", "the result (wait=true); a cancelled job's too"),
            "202": {**_json({"type": "object", "additionalProperties": False,
                             "required": ["id", "state"],
                             "properties": {"id": {"type": "string"},
                                            "state": {"const": "queued"}}},
                            "accepted (wait=false): poll GET /v1/jobs/{id}"),
                    "headers": {"Location": {"schema": {"type": "string"}}}},
            "400": _error("malformed: the body is not JSON"),
            "408": _error("timeout: the body did not arrive in time"),
            "413": _error("frame_too_large: the body is over http_max_body"),
            "422": _error("invalid_field, unknown_profile, limit_exceeded or invalid_job"),
            "500": _error("internal_error: sandboxd's own failure"),
            **_COMMON}}},
    "/v1/jobs/{id}": {
        "get": {
            "summary": "A background job: queued, running, done (with its result) or failed",
            "parameters": _JOB_ID,
            "responses": {
                "200": _json({"oneOf": [_ref("JobResult"), _ref("JobPending"),
                                        _ref("JobFailed")]}, "its state"),
                "404": _error("unknown_job: never submitted, or its result expired"),
                **_COMMON}},
        "delete": {
            "summary": "Cancel a background job (its result says cancelled), or forget a "
                       "finished one's result",
            "parameters": _JOB_ID,
            "responses": {
                "200": _json("Cancelled", "it had finished: its result is forgotten"),
                "202": _json("Cancelled", "cancelled: poll for its result"),
                "404": _error("unknown_job"), **_COMMON}}},
    "/v1/jobs/{id}/log": {"get": {
        "summary": "A background job's output from a byte offset; with follow=true, "
                   "streamed until the job ends (re-attach by id)",
        "parameters": [*_JOB_ID,
                       {"name": "offset", "in": "query", "schema": {"type": "integer",
                                                                     "minimum": 0}},
                       {"name": "follow", "in": "query", "schema": {"type": "boolean"}}],
        "responses": {
            "200": {"description": "the log's bytes from offset (X-Log-Size, X-Job-State)",
                    "content": {"application/octet-stream": {}}},
            "404": _error("unknown_job"), "422": _error("invalid_field: offset"),
            **_COMMON}}},
    "/v1/workspaces": {"post": {
        "summary": "Upload a CI job's workspace: a tar or tar.gz archive as the raw body, "
                   "up to max_workspace bytes, spooled to disk (docs/ci.md)",
        "parameters": [{"name": "format", "in": "query",
                        "schema": {"enum": ["tar", "gzip"]}}],
        "requestBody": {"content": {"application/octet-stream": {}}},
        "responses": {
            "201": _json({"type": "object", "required": ["workspace", "size", "format"],
                          "properties": {"workspace": {"type": "string"},
                                         "size": {"type": "integer"},
                                         "format": {"enum": ["tar", "gzip"]}}},
                         "its id, for a job's workspace field"),
            "408": _error("timeout: the upload stalled"),
            "413": _error("frame_too_large: over max_workspace"),
            **_COMMON}}},
    "/v1/jobs/stream": {"get": {
        "summary": "WebSocket: one job, output streamed, stdin typed in (docs/http.md)",
        "description": "Send the job (a Job, plus \"interactive\": true|false) as the first "
                       "message; then {\"stdin\": text}, {\"stdin_b64\": ...}, "
                       "{\"eof\": true} or {\"cancel\": true}. Receive {\"type\": "
                       "\"accepted\"}, {\"type\": \"output\", \"stream\", \"step\", "
                       "\"compile\", \"data\"[, \"data_b64\"]}, then {\"type\": \"result\", "
                       "...JobResult} or {\"type\": \"error\", \"error\", \"message\"}.",
        "responses": {"101": {"description": "switching to the WebSocket protocol"},
                      **_COMMON}}},
}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "sandboxd", "version": __version__,
             "description": "sandboxd's own HTTP API: run untrusted code in single-use "
                            "containers. Errors are {\"error\": code, \"message\": ...} with "
                            "the msgpack protocol's codes (docs/http.md)."},
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}],
    "paths": PATHS,
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": ERROR, "Data": DATA, "Limits": LIMITS, "LimitValues": LIMIT_VALUES,
            "Job": JOB, "Test": TEST, "Repeat": REPEAT, "StepResult": STEP,
            "Program": PROGRAM, "Batch": BATCH, "BatchResult": BATCH_RESULT,
            "CheckerRun": CHECKER_RUN,
            "JobResult": JOB_RESULT, "JobPending": JOB_PENDING, "JobFailed": JOB_FAILED,
            "Profile": PROFILE, "Stats": STATS, "Ps": PS,
            "Health": {"type": "object", "additionalProperties": False,
                       "required": ["status", "version"],
                       "properties": {"status": {"enum": ["ok", "draining"]},
                                      "version": {"type": "string"}}},
            "Cancelled": {"type": "object", "additionalProperties": False,
                          "required": ["id", "cancelled"],
                          "properties": {"id": {"type": "string"},
                                         "cancelled": {"type": "boolean"}}},
        },
    },
}
