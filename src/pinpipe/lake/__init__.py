"""The lake: object storage for landed records and Delta tables."""

from pinpipe.lake.store import Lake, ObjectInfo, landed_key, open_lake, parse_landed_key

__all__ = ["Lake", "ObjectInfo", "landed_key", "open_lake", "parse_landed_key"]
