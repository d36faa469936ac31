"""The SDK layer that ties the domain packages together; re-exported from ``lorahub``."""
