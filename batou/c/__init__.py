"""Namespace of a deployment's component modules (``batou.c.<directory>``)."""
