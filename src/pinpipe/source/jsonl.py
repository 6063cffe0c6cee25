"""Write generated tables as JSONL files, one JSON record per line (the bundled sample's format).

Callers: ``pinpipe source generate`` and tests/benchmarks that want files rather than a database.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson

from pinpipe.errors import ConfigError
from pinpipe.synth.faults import check_rate, inject_faults
from pinpipe.synth.generate import generate
from pinpipe.tables import KINDS, RAW_TABLES, Kind


def write_generated_jsonl(
    out_dir: Path,
    rows: int,
    seed: int = 0,
    *,
    faults: float = 0.0,
    progress: Callable[[int], None] | None = None,
) -> dict[Kind, Path]:
    """Write ``<out_dir>/<table>.jsonl`` for the three tables (``rows`` rows each, with ``faults`` injected per
    record, see :mod:`pinpipe.synth.faults`) and return the paths. Existing files are overwritten."""
    check_rate("faults", faults)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a directory", hint="choose a directory path")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / f"{RAW_TABLES[kind].name}.jsonl" for kind in KINDS}
    files = {kind: path.open("wb") for kind, path in paths.items()}
    try:
        for number, block in enumerate(generate(rows, seed)):
            for kind in KINDS:
                records = block.records(kind)
                if faults:
                    records = inject_faults(kind, records, faults, (seed, number))
                files[kind].write(b"".join(orjson.dumps(r) + b"\n" for r in records))
            if progress is not None:
                progress(len(block))
    finally:
        for f in files.values():
            f.close()
    return paths
