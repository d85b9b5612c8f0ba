"""Precise code intelligence: index jobs for repositories, their uploads, code navigation."""
