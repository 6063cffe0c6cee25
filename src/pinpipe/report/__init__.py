"""The HTML report: :mod:`pinpipe.report.html` (page), :mod:`pinpipe.report.charts` (SVG charts), ``assets/``."""
