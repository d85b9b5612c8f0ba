"""Dispatch: handing the records of the executor queues out to executors, and back."""
