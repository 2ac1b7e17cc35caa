"""Steps cut into chunks for several threads give exactly the serial loops' bits."""

import numpy as np
import pytest

from tests.cases import CASES, VARIANTS, trajectory
from tests.parallel_tools import cut_everything, cut_nothing


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_parallel_loops_match_serial_loops_bit_for_bit(case, dtype, monkeypatch):
    shape = (3 * 4096 + 77,)  # several reduction blocks and a ragged end
    variant = VARIANTS["clip"]
    cut_nothing(monkeypatch)
    serial = [
        (w.copy(), {k: a.copy() for k, a in s.arrays.items()})
        for _, w, s, _, _ in trajectory(case, variant, dtype, shape)
    ]
    cut_everything(monkeypatch)
    parallel = [
        (w.copy(), {k: a.copy() for k, a in s.arrays.items()})
        for _, w, s, _, _ in trajectory(case, variant, dtype, shape)
    ]
    bits = np.uint32 if dtype == np.float32 else np.uint64
    for (w_s, s_s), (w_p, s_p) in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(w_p.view(bits), w_s.view(bits))
        for name in s_s:
            np.testing.assert_array_equal(s_p[name].view(bits), s_s[name].view(bits))
