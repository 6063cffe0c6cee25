"""PySpark as the engine (extra ``pinpipe[spark]``, Java 17): the same DataFrame programs as on DuckDB."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pinpipe.engine.base import Engine, EngineName
from pinpipe.errors import require


class SparkEngine(Engine):
    """PySpark in local mode, bound to loopback, UTC, ANSI mode as Spark 4 ships it; ``driver_memory`` is the JVM
    heap, which in local mode holds the tasks too (Spark's default 1g runs out at 1M rows per table); it applies
    when this call starts the JVM."""

    name: EngineName = "spark"

    def __init__(self, master: str = "local[2]", driver_memory: str = "4g") -> None:
        require("pyspark", "spark")
        from pyspark.sql import SparkSession, Window
        from pyspark.sql import functions as F

        self.session = (
            SparkSession.builder.master(master)
            .appName("pinpipe")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.memory", driver_memory)
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.sql.shuffle.partitions", "4")
            .getOrCreate()
        )
        self.session.sparkContext.setLogLevel("ERROR")
        self.F = F
        self.Window = Window

    def frame(self, table: pa.Table, name: str | None = None) -> Any:
        return self.session.createDataFrame(table)

    def close(self) -> None:
        try:
            self.session.stop()
        finally:
            super().close()
