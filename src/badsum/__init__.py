"""badsum: find where packets go bad in container and overlay networks."""

__version__ = "0.1.0"
