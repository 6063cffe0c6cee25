"""PySpark as the engine (extra ``pinpipe[spark]``, Java 17; PySpark 3.5 and 4.x): the same DataFrame programs as
on DuckDB, on any master.

Where the session comes from:

- inside a running Spark application (``spark-submit``, a Databricks job: an active session exists) that session
  is used as it is, and :meth:`SparkEngine.close` leaves it running;
- under ``spark-submit`` (no session yet, the submitting JVM waiting) one is built on spark-submit's
  ``--master`` and configuration, unless pinpipe's settings name a master;
- otherwise one is built for :class:`~pinpipe.config.SparkSettings` ``master`` (``local[N]``, ``spark://HOST:PORT``,
  …) with ``conf`` applied last. A ``spark://`` master must accept connections within ``connect_timeout_s``
  (:func:`wait_for_master`), else the run fails with a retryable error (exit 75) naming it. For a local master the driver binds to 127.0.0.1 only; for a cluster it binds
  to ``driver_host`` when one is set (the address executors reach it at), else wherever Spark decides.

Sessions run in UTC with ANSI SQL on (Spark 4's default, set explicitly so that 3.5 behaves the same) and Arrow
transfers on. Only calls PySpark 3.5 has are used: a DataFrame over Arrow goes through pandas on 3.5
(``createDataFrame(pa.Table)`` is 4.0+), results come back through ``toArrow`` on 4.x and ``_collect_as_arrow``
on 3.5. The batch job does not use either for its data on Spark: executors read, clean and write
(:mod:`pinpipe.batch.spark_job`).
"""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

import pyarrow as pa

from pinpipe.config import SparkSettings, spark_submitted
from pinpipe.engine.base import Engine, EngineName
from pinpipe.errors import ConfigError, RetryableError, require

LOOPBACK = "127.0.0.1"

DEFAULTS: dict[str, str] = {
    "spark.app.name": "pinpipe",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.ansi.enabled": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.shuffle.partitions": "4",
}
"""Settings of a session pinpipe builds (``SparkSettings.conf`` overrides any of them)."""


def is_local_master(master: str) -> bool:
    """True for ``local``, ``local[N]``, ``local[*]``, ``local[N,F]`` and ``local-cluster[…]``."""
    return master == "local" or master.startswith(("local[", "local-cluster["))


MASTER_FORMS = ("local", "local[N]", "local-cluster[N,C,M]", "spark://HOST:PORT", "yarn", "k8s://URL", "mesos://URL")


def check_master(master: str) -> str:
    """``master`` if Spark accepts its form, else :class:`~pinpipe.errors.ConfigError` (Spark would only say that
    its JVM exited)."""
    if is_local_master(master) or master == "yarn" or master.startswith(("spark://", "k8s://", "mesos://")):
        return master
    raise ConfigError(
        f"spark master {master!r} is not a Spark master URL",
        hint="use --spark-master (or spark.master) with one of: " + ", ".join(MASTER_FORMS),
        setting="spark.master",
    )


def master_addresses(master: str) -> list[tuple[str, int]]:
    """The ``(host, port)`` of each master of a ``spark://`` URL (``spark://h1:7077,h2:7077`` names a standby
    too); no port means Spark's 7077. Empty for every other kind of master."""
    if not master.startswith("spark://"):
        return []
    out: list[tuple[str, int]] = []
    for item in master[len("spark://") :].split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep:
            host, port = port, "7077"
        if not host or not port.isdigit():
            raise ConfigError(
                f"spark master {master!r} has no HOST:PORT in {item!r}",
                hint="use spark://HOST:PORT (or spark://HOST1:PORT1,HOST2:PORT2)",
                setting="spark.master",
            )
        out.append((host.strip("[]"), int(port)))
    return out


def wait_for_master(master: str, timeout_s: float) -> None:
    """Return once one of the masters of a ``spark://`` URL accepts a TCP connection; a
    :class:`~pinpipe.errors.RetryableError` (exit 75) naming the URL if none does within ``timeout_s``.

    :class:`SparkEngine` calls it before starting a session on a standalone master: Spark's own client retries
    an unreachable master for about a minute and then fails with an error that does not say what was wrong."""
    addresses = master_addresses(master)
    if not addresses:
        return
    deadline = time.monotonic() + timeout_s
    last: OSError | None = None
    while True:
        for host, port in addresses:
            left = max(0.05, min(2.0, deadline - time.monotonic()))
            try:
                socket.create_connection((host, port), timeout=left).close()
                return
            except OSError as exc:
                last = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    raise RetryableError(
        f"the Spark master {master} did not accept a connection within {timeout_s:g} s ({last})",
        hint="check that the master is running and reachable from here (--spark-master or spark.master), "
        "or raise spark.connect_timeout_s; the run can be retried",
        master=master,
        backend="spark",
    )


def session_conf(settings: SparkSettings, submitted: bool = False) -> dict[str, str]:
    """Everything a built session is configured with (the master aside): :data:`DEFAULTS`, the driver's
    addresses and memory, then ``settings.conf``. Under ``spark-submit`` (``submitted``) with no master set in
    pinpipe's settings, the master, the driver's addresses and memory are spark-submit's."""
    conf = dict(DEFAULTS)
    if submitted and "master" not in settings.model_fields_set:
        conf.update(settings.conf)
        return conf
    conf["spark.driver.memory"] = settings.driver_memory
    if is_local_master(settings.master):
        conf["spark.driver.bindAddress"] = LOOPBACK
        conf["spark.driver.host"] = LOOPBACK
    elif settings.driver_host:
        conf["spark.driver.bindAddress"] = settings.driver_host
        conf["spark.driver.host"] = settings.driver_host
    conf.update(settings.conf)
    return conf


class SparkEngine(Engine):
    """PySpark on ``settings.master`` (or the running application's session; see the module docstring).

    ``driver_memory`` (settings) is the JVM heap, which in local mode holds the tasks too (Spark's default 1g
    runs out at 1M rows per table in local mode); it applies when this call starts the JVM."""

    name: EngineName = "spark"

    def __init__(self, settings: SparkSettings | None = None) -> None:
        require("pyspark", "spark")
        import pyspark
        from pyspark.sql import SparkSession, Window
        from pyspark.sql import functions as F

        self.settings = settings or SparkSettings()
        self.version = tuple(int(p) for p in pyspark.__version__.split(".")[:2])
        if self.version < (3, 5):
            raise ConfigError(
                f"PySpark {pyspark.__version__} is too old for pinpipe", hint="install pyspark 3.5 or 4.x"
            )
        active = SparkSession.getActiveSession()
        self.owned = active is None
        if active is not None:
            self.session = active
        else:
            submitted = spark_submitted()
            builder = SparkSession.builder
            if not submitted or "master" in self.settings.model_fields_set:
                master = check_master(self.settings.master)
                wait_for_master(master, self.settings.connect_timeout_s)
                builder = builder.master(master)
            for key, value in session_conf(self.settings, submitted).items():
                builder = builder.config(key, value)
            self.session = builder.getOrCreate()
            self.session.sparkContext.setLogLevel("ERROR")
        context = self.session.sparkContext
        if self.settings.python:
            context.pythonExec = self.settings.python
        elif self.owned and context.pythonExec == "python3":  # PYSPARK_PYTHON unset: executors run our Python
            context.pythonExec = sys.executable
        self.F = F
        self.Window = Window

    @property
    def master(self) -> str:
        """The master URL the session runs on."""
        return str(self.session.sparkContext.master)

    @property
    def parallelism(self) -> int:
        """How many tasks the cluster runs at once (Spark's default parallelism), at least 1."""
        return max(1, int(self.session.sparkContext.defaultParallelism))

    def frame(self, table: pa.Table, name: str | None = None) -> Any:
        if self.version >= (4, 0):
            return self.session.createDataFrame(table)
        from pyspark.sql.pandas.types import from_arrow_schema

        schema = from_arrow_schema(table.schema)
        if table.num_rows == 0:
            return self.session.createDataFrame([], schema)
        # integers with nulls stay integers (objects), not floats with NaN
        return self.session.createDataFrame(table.to_pandas(integer_object_nulls=True), schema=schema)

    def to_arrow(self, df: Any) -> pa.Table:
        if self.version >= (4, 0):
            return df.toArrow()
        from pyspark.sql.pandas.types import to_arrow_schema

        batches = df._collect_as_arrow()
        return pa.Table.from_batches(batches) if batches else to_arrow_schema(df.schema).empty_table()

    def close(self) -> None:
        try:
            if self.owned:
                self.session.stop()
        finally:
            super().close()
