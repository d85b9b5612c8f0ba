"""offload: run expensive, untrusted work on a fleet of sandboxed executors."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("offload")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
