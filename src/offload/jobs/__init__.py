"""Generic jobs: a command run against a repository on an executor (`offload run`)."""
