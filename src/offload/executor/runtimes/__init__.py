"""Runtimes: how an executor isolates the steps of a job (see base.py)."""
