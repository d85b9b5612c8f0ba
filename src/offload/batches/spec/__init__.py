"""Batch specs: their model, and reading one from YAML with every problem's place (schema,
checks, limits), in worker processes off the event loop."""
