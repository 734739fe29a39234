"""Runnable reproductions of the four papers; run as ``python -m examples.NAME``."""
