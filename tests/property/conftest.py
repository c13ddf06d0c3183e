"""Hypothesis profiles: `dev` (quick), `ci` (the default in `make test`), `fuzz` (long runs)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("dev", max_examples=100, **_COMMON)
settings.register_profile("ci", max_examples=2500, derandomize=True, print_blob=True, **_COMMON)
settings.register_profile("fuzz", max_examples=20000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
