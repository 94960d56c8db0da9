"""Alembic migrations for tierflow's store. Imports only store models."""
