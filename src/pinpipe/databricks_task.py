"""The entry point of pinpipe's Databricks job tasks: ``pinpipe`` inside the cluster's Spark application, with a
failure message the scheduler can read.

Who calls it: a Databricks run submitted by ``dags/pinpipe_databricks.py`` (a ``spark_python_task`` whose
``python_file`` is this file, uploaded as a workspace file, with the pinpipe wheel installed from a Unity Catalog
volume) calls :func:`main` with the task's ``parameters`` as the command line (``batch --engine spark --lake
s3://…``). Locally: ``python -m pinpipe.databricks_task ARGS``.

What it adds to ``pinpipe ARGS``:

- the cluster's SparkSession is made the active one before the command starts, so the Spark engine runs on it
  and leaves it running (a job must not stop the cluster's context); on Databricks, with ``delta.tables``
  there, the batch job merges with Delta's own MERGE (:mod:`pinpipe.engine.spark_delta`);
- a command that fails raises :class:`PinpipeTaskFailed` whose message starts with ``pinpipe-exit <code>
  <class>`` (:func:`failure_message`): Databricks reports an uncaught exception's message as the run's error
  (``runs/get-output`` ``error``, which the Airflow provider puts into its failure), so the DAG tells a fatal
  failure (65, 2, 3: do not retry) from a retryable one (75) by reading it (:func:`exit_code_in`). A process
  exit code alone would reach Airflow only as "FAILED".
"""

from __future__ import annotations

import io
import re
import sys
from typing import TextIO

from pinpipe.config import spark_submitted

MARK = "pinpipe-exit"
EXIT_CLASSES: dict[int, str] = {
    1: "internal",
    2: "usage",
    3: "accounting",
    65: "fatal",
    75: "retryable",
    130: "interrupted",
}
"""The class of each exit code of the CLI (SPEC §8); the DAG retries ``retryable``, ``internal`` and
``interrupted`` and fails the others at once."""

_PATTERN = re.compile(rf"{MARK} (\d+)\b")


class PinpipeTaskFailed(Exception):
    """A pinpipe command in a Databricks task exited with ``code`` (the message is :func:`failure_message`)."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(failure_message(code, detail))
        self.code = code


def failure_message(code: int, detail: str) -> str:
    """``pinpipe-exit 65 fatal: <the command's error line>``."""
    return f"{MARK} {code} {EXIT_CLASSES.get(code, 'internal')}: {detail}".rstrip(": ")


def exit_code_in(text: str) -> int | None:
    """The exit code a :func:`failure_message` in ``text`` carries (the last one), None if there is none."""
    found = _PATTERN.findall(text)
    return int(found[-1]) if found else None


class _Tee(io.TextIOBase):
    """Writes through to ``stream`` and keeps the text (the command's ``error:``/``hint:`` lines)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.text: list[str] = []

    def write(self, s: str) -> int:
        self.text.append(s)
        return self.stream.write(s)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def _error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("error:", "hint:"))]
    return " ".join(errors) if errors else (lines[-1] if lines else "")


def _use_cluster_session() -> None:
    """Under a Spark application's driver (Databricks, ``spark-submit``) make its session the active one."""
    if not spark_submitted():
        return
    from pyspark.sql import SparkSession

    SparkSession.builder.getOrCreate()


def main(argv: list[str] | None = None) -> None:
    """Run ``pinpipe ARGV`` (default: ``sys.argv[1:]``); raise :class:`PinpipeTaskFailed` if it fails."""
    from pinpipe.cli import main as cli_main

    args = list(sys.argv[1:] if argv is None else argv)
    _use_cluster_session()
    tee = _Tee(sys.stderr)
    saved, sys.stderr = sys.stderr, tee
    try:
        cli_main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stderr = saved
    if code != 0:
        raise PinpipeTaskFailed(code, _error_line("".join(tee.text)))


if __name__ == "__main__":
    main()
