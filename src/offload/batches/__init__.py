"""Batch changes: one change described once, run across many repositories, tracked as changesets."""
