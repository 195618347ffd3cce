"""The event log: a torn last line is skipped without a word, garbage in the middle is
skipped and reported, and every good event around either is kept."""

from __future__ import annotations

import json
import warnings

import pytest

from hpcopt.core.events import EventLog, GarbledEvents, read_events


def line(kind: str, **fields) -> bytes:
    return json.dumps({"time": 1.0, "kind": kind, **fields}).encode() + b"\n"


GOOD = line("worker_up", worker="w1") + line("task_started", task=1)


def quietly(path):
    """``read_events(path)``, failing on any warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return read_events(path)


def test_every_event_of_a_log_is_read_in_order(tmp_path):
    log = EventLog(tmp_path / "events.jsonl")
    log("worker_up", worker="w1")
    log("task_finished", task=3)
    log.close()
    assert [e["kind"] for e in quietly(tmp_path / "events.jsonl")] == [
        "worker_up",
        "task_finished",
    ]


def test_a_log_that_does_not_exist_yet_has_no_events(tmp_path):
    assert quietly(tmp_path / "events.jsonl") == []


def test_a_torn_last_line_is_skipped_without_a_warning(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(GOOD + line("task_finished", task=1)[:20])
    assert [e["kind"] for e in quietly(path)] == ["worker_up", "task_started"]


def test_garbage_in_the_middle_is_reported_and_every_later_event_kept(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(GOOD + b'{"time": 1.0, "ki\n' + line("task_finished", task=1))
    with pytest.warns(GarbledEvents, match=r"events\.jsonl: 1 line\(s\) .*\(line 3\)") as seen:
        events = read_events(path)
    assert [e["kind"] for e in events] == ["worker_up", "task_started", "task_finished"]
    assert seen[0].message.lines == [3]


@pytest.mark.parametrize(
    "garbage",
    [b"\xff\xfe not utf-8", b"[1, 2]", b'{"time": 1.0}', b'{"kind": 3}', b""],
    ids=["bytes", "a list", "no kind", "a kind that is no name", "an empty line"],
)
def test_a_middle_line_that_is_no_event_is_reported(tmp_path, garbage):
    path = tmp_path / "events.jsonl"
    path.write_bytes(line("worker_up", worker="w1") + garbage + b"\n" + line("worker_down"))
    with pytest.warns(GarbledEvents) as seen:
        events = read_events(path)
    assert [e["kind"] for e in events] == ["worker_up", "worker_down"]
    assert seen[0].message.lines == [2]


def test_a_writer_cuts_off_the_torn_line_a_killed_writer_left_before_appending(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(GOOD + line("task_finished", task=1)[:20])
    log = EventLog(path)
    log("worker_down", worker="w1")
    log.close()
    assert [e["kind"] for e in quietly(path)] == ["worker_up", "task_started", "worker_down"]


def test_a_writer_cuts_a_log_that_is_one_torn_line_longer_than_a_block(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(line("task_failed", error="x" * 10_000)[:-5])
    EventLog(path).close()
    assert path.read_bytes() == b""
