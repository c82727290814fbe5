"""The `kokpit` command line."""
