"""``python -m pinpipe ARGS`` — the same as the ``pinpipe`` script.

Also the entry file of the Databricks variant (``dags/pinpipe_databricks.py`` submits it as a
``spark_python_task`` with the pinpipe wheel installed on the cluster).
"""

from pinpipe.cli import main

if __name__ == "__main__":
    main()
