"""consign's executor: applies bundles on a host; owns the component API."""

__version__ = "0.1.0"
