"""Persistence: SQLAlchemy models and the few queries the tasks and the CLI need.

Must not import celery or the providers; routing/ values come in as plain data.
"""
