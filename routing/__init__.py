"""Routing decisions for tierflow: pure functions over plain data.

Must not import celery, kombu, sqlalchemy, httpx, redis, openai or anthropic
(tests/unit/test_layering.py enforces it).
"""
