"""Running the whole pipeline: :mod:`~pinpipe.ops.supervise` (child processes), :mod:`~pinpipe.ops.demo`
(``pinpipe demo``) and :mod:`~pinpipe.ops.drill` (``pinpipe drill``: kills at random moments, then checks)."""
