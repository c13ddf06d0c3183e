"""Podgraft: a Kubernetes mutating admission webhook that grafts helpers onto pods from policies."""

__version__ = "0.1.0"
