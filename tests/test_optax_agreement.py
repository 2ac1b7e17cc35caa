"""mxopt reproduces optax over 50 float32 steps (skipped without optax)."""

import pytest

from tests.optax_agreement import OPTAX_CASES, max_deviation

pytest.importorskip("optax")


@pytest.mark.parametrize("case", OPTAX_CASES, ids=[c.label for c in OPTAX_CASES])
def test_matches_optax_over_50_steps(case):
    deviation = max_deviation(case)
    assert deviation <= case.tolerance, f"{case.label}: {deviation:.2e}"
