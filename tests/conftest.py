"""Shared fixtures and hypothesis profiles.

``HYPOTHESIS_PROFILE=ci`` (set by .ci/run) keeps the suite to a few minutes on
a 2-core machine; ``dev`` is the default for local runs; ``heavy`` is for a
long soak on demand: ``HYPOTHESIS_PROFILE=heavy make test``.
"""
import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow], derandomize=True,
)
settings.register_profile(
    "dev", max_examples=100, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "heavy", max_examples=2000, stateful_step_count=100, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

BACKENDS = ["core", "reference"]

#: Policy fields that switch off fair release, the slow lane and the risk
#: signals, for tests of the plain slot ledger's rules.
LEDGER_ONLY = dict(prequeue_minutes=0, cohort_seconds=0, early_flag=(0, 1),
                   cancel_flag=(0, 30), patients_flag=(0, 30), rebook_seconds=0,
                   rerelease_seconds=(0, 0), on_suspend="cancel")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Run a behaviour test once per implementation."""
    return request.param
