"""Benchmarks: they print their figures and compare side by side in one run.

Run them as scripts (`python bench/throughput.py`); nothing in the project imports them.
"""
