"""Code hosts that batch changes open and track pull requests on."""
