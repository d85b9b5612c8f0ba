"""The executor protocol: wire models and routes shared by the server and the executor."""
