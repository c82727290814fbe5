"""kokpit: final-state fleet management for Kubernetes (Kube on Kube)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kokpit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
