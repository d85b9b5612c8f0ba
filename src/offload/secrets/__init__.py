"""Executor secrets: values kept encrypted on the server, handed to jobs by name."""
