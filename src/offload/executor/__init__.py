"""The executor agent: polls the server for jobs and runs their steps in a sandbox runtime."""
