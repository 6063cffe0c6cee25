"""The streaming stage: the event log → clean → silver/quarantine Delta in micro-batches, exactly once.

- :mod:`pinpipe.stream.worker` — one worker's loop (read, clean, pipelined commits, resume);
- :mod:`pinpipe.stream.compaction` — periodic small-file compaction of the tables a worker writes.
"""
