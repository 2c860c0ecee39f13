"""``recops.cli.dag_test_runner``: `dags test` output split into the UI's task logs."""

from __future__ import annotations

import json

from recops.cli.dag_test_runner import json_log_lines, split_by_task

# Lines as `airflow dags test` prints them (structlog's console renderer).
LINES = [
    "2026-12-06T17:43:47.306Z [info     ] Created dag run.  [airflow.models.dagrun] loc=x.py:1\n",
    "2026-12-06T17:43:47.446Z [info     ] [DAG TEST] starting task_id=a map_index=-1 "
    "[airflow.sdk.definitions.dag] loc=dag.py:1501\n",
    "2026-12-06T17:43:47.446Z [info     ] [DAG TEST] running task <TaskInstance: probe.a "
    "manual__x [TaskInstanceState.SCHEDULED] ti_id=1> [airflow.sdk.definitions.dag] loc=dag.py:1\n",
    "2026-12-06T17:43:54.348Z [info     ] hello from a                   [x] loc=probe.py:10\n",
    "stdout line\n",
    "2026-12-06T17:43:54.390Z [info     ] [DAG TEST] end task task_id=a map_index=-1 "
    "[airflow.sdk.definitions.dag] loc=dag.py:1563\n",
    "2026-12-06T17:43:54.400Z [info     ] [DAG TEST] starting task_id=b map_index=2 "
    "[airflow.sdk.definitions.dag] loc=dag.py:1501\n",
    "2026-12-06T17:43:54.410Z [error    ] Task failed with exception [task] loc=t.py:1\n",
    "Traceback (most recent call last):\n",
    '  File "probe.py", line 3, in b\n',
    "\x1b[31mRuntimeError: planted\x1b[0m\n",
    "2026-12-06T17:43:54.420Z [info     ] [DAG TEST] end task task_id=b map_index=2 "
    "[airflow.sdk.definitions.dag] loc=dag.py:1563\n",
    "2026-12-06T17:43:54.430Z [info     ] [DAG TEST] starting task_id=b map_index=2 "
    "[airflow.sdk.definitions.dag] loc=dag.py:1501\n",
    "2026-12-06T17:43:54.440Z [info     ] [DAG TEST] end task task_id=b map_index=2 "
    "[airflow.sdk.definitions.dag] loc=dag.py:1563\n",
    "2026-12-06T17:43:54.510Z [info     ] Marking run successful [airflow.models.dagrun]\n",
]


def test_lines_are_split_by_task_instance_and_attempt() -> None:
    parts = split_by_task(LINES)
    assert sorted(parts) == [("a", -1), ("b", 2)]
    (a_run,) = parts[("a", -1)]
    assert a_run == LINES[1:6]  # from its start line to its end line, nothing of the run's
    first, second = parts[("b", 2)]  # a retry is a second part
    assert "planted" in "".join(first) and "planted" not in "".join(second)


def test_console_lines_become_the_json_records_the_ui_renders() -> None:
    records = [json.loads(line) for line in json_log_lines(LINES[1:6] + LINES[7:11])]
    assert [r["level"] for r in records] == ["info"] * 5 + ["error"] * 4
    starting, running, hello, printed = records[:4]
    assert starting["logger"] == "airflow.sdk.definitions.dag"
    assert starting["event"].startswith("[DAG TEST] starting task_id=a map_index=-1")
    # The logger is the last bracket, not one inside the message.
    assert running["logger"] == "airflow.sdk.definitions.dag"
    assert "[TaskInstanceState.SCHEDULED]" in running["event"]
    assert hello["event"] == "hello from a loc=probe.py:10" and hello["logger"] == "x"
    # A bare line takes the previous line's time; inside a traceback it is an error.
    assert printed == {"event": "stdout line", "level": "info", "timestamp": hello["timestamp"]}
    assert records[-1]["event"] == "RuntimeError: planted"  # colour codes stripped
    assert all(r["timestamp"].startswith("2026-12-06T17:43") for r in records)
