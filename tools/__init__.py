"""Developer tooling, outside the product package: `make eval`, `make tune-fallback`, `make bench`."""
