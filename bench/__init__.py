"""Tocsin's benchmark: throughput and latency against same-box ceilings.

Run ``python -m bench`` from the repository root (``--quick`` for a smoke run); see
``bench/README.md`` for what each figure means.
"""
