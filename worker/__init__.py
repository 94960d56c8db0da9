"""The Celery application, its queues, the settings and the `tierflow` command line."""
