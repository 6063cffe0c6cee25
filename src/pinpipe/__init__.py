"""pinpipe: the Pinterest data pipeline, on a laptop in one command and on Kafka, Kinesis, S3, Spark, Airflow."""

from pinpipe.config import Settings, load_settings
from pinpipe.errors import FatalError, PinpipeError, RetryableError
from pinpipe.tables import KINDS, Kind

__all__ = ["KINDS", "FatalError", "Kind", "PinpipeError", "RetryableError", "Settings", "load_settings"]

__version__ = "0.1.0"
