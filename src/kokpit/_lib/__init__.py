"""Small helpers shared by every kokpit package (clock, backoff, task stopping, PKI) and kokpit's one
low-level HTTP/1.1 client (:mod:`kokpit._lib.http1`); no Kubernetes or server knowledge, no kokpit imports."""

__all__: list[str] = []
