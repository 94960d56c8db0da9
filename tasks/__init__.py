"""Celery tasks: thin glue between routing decisions, providers and the store."""
