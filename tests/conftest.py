"""Make the shared helpers in tests/ (gradcheck.py, devices.py) importable from every test
module; the `device` fixture of the backend-parameterised tests."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from devices import DEVICES, skip_unless_usable  # noqa: E402


@pytest.fixture(params=DEVICES, ids=DEVICES)
def device(request):
    """'cpu' or 'gpu' (see tests/devices.py); a gpu case skips, with the reason, where no
    GPU is usable (fails instead when NPDLRM_REQUIRE_GPU=1)."""
    skip_unless_usable(request.param)
    return request.param
