"""Small helpers shared by every kokpit package (clock, backoff, ...); no I/O, no server knowledge."""

__all__: list[str] = []
