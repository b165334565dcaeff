"""The WISMO assistant: the shop's own Python package (see ARCHITECTURE.md)."""
