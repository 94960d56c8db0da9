"""The kind seam: what a job kind is (spec.py), the kinds in force (registry.py), the built-in
kinds as plug-ins (builtin.py), kinds files (files.py), the acceptance checks (checks.py), the
rule experts (extractors.py) and payload templates (template.py).

Nothing outside this package names a kind or an expert. Pure: pydantic, jsonschema and the
standard library; it imports nothing that opens a connection.
"""
