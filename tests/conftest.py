from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# These machines are noisy: no per-example deadline. CI runs more examples.
settings.register_profile("dev", deadline=None, max_examples=200)
settings.register_profile(
    "ci", deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

from tests.pg import pg_cluster, pg_url  # noqa: E402, F401 - fixtures
