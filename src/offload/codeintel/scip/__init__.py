"""SCIP indexes: the upstream schema's bindings, and reading an index as a bounded stream."""
