"""One result shape: every layer's step result has the same fields, in the same order.

The daemon's ``Result`` (sandboxd/result.py), the wire's ``StepResult`` and its
schema (sandboxd_protocol), the client's ``StepResult`` and the msgpack front
door's mapping are declared apart (each layer may import only what lies
below it); this test is what keeps them one shape. The wire adds ``repeat``
(the summary of a repeated test), which the daemon keeps beside the result, and a
judged job's ``score``, ``checker_message`` and ``checker`` (its own run).
"""

from __future__ import annotations

import dataclasses

import sandboxd_client
import sandboxd_protocol as proto
from sandboxd.front._wire import RESULT_FIELDS, step_result
from sandboxd.jobs import StepOutcome
from sandboxd.result import VERDICTS, Result
from sandboxd_protocol import _schema

DAEMON = tuple(f.name for f in dataclasses.fields(Result))


def names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


# A step judged by a program (a checker, an interactor) carries these besides (jobs.StepOutcome).
JUDGED = ("score", "checker_message", "checker", "interactor")


def test_the_wire_record_has_the_daemons_fields_and_repeat():
    assert names(proto.StepResult) == (*DAEMON, "repeat", "score", "checker_message",
                                       "checker", "interactor", "artifacts",
                                       "artifacts_truncated")


def test_the_schema_has_the_wire_records_fields():
    assert tuple(name for name, _kind, _required in _schema.STEP_RESULT.fields) \
        == names(proto.StepResult)


def test_the_client_has_the_wire_records_fields():
    assert names(sandboxd_client.StepResult)[: len(names(proto.StepResult))] \
        == names(proto.StepResult)


def test_the_front_door_maps_every_field():
    assert RESULT_FIELDS == DAEMON
    r = Result(verdict="runtime_error", reason="exit code 3", exit_code=3, signal=None,
               cpu_time=0.25, user_time=0.2, sys_time=0.05, wall_time=0.5,
               memory_peak=12345, oom_killed=True, stdout=b"out\xff", stderr=b"err",
               stdout_truncated=True, stderr_truncated=False)
    wire = step_result(StepOutcome(r))
    assert {n: getattr(wire, n) for n in DAEMON} == dataclasses.asdict(r)
    message = proto.JobResult(id="j", steps=(wire,))
    lim = proto.SizeLimits()
    assert _schema.decode_message(_schema.encode_message(message, lim), lim) == message


def test_every_layer_knows_the_same_verdicts():
    assert set(VERDICTS) == set(proto.VERDICTS) == {str(v) for v in sandboxd_client.Verdict}
