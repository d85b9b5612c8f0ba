"""Index uploads: received from executors, processed into documents, symbols and ranges."""
