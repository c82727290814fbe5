"""What every kokpit command shares (defined in :mod:`kokpit._lib.cli`, which component packages can use)."""

from kokpit._lib.cli import fail, setup_logging

__all__ = ["fail", "setup_logging"]
