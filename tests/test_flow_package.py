"""The idtfv.idt.flow package: its public names load on first use, and importing it (or its options) loads no
Numba until a solver runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import idtfv.idt.flow as flow

_PROBE = """
import json, sys
import numpy as np
def loaded():
    return sorted(m for m in sys.modules if m.split('.')[0] == 'numba' or m.endswith('_nb'))[:5]
out = {}
import idtfv.idt.flow
out['package'] = loaded()
from idtfv.idt.flow import (BACKENDS, METHODS, DISParams, FarnebackParams, PyramidFlowParams, TVL1Params,
                            estimate_flow, make_pyramid_flow)
from idtfv.idt import IDTParams
make_pyramid_flow(IDTParams().pyramid_flow())
out['options'] = loaded()
a = np.zeros((24, 32), np.uint8)
estimate_flow(a, a, params=TVL1Params.fast(), backend='cpu')
out['solved'] = loaded()
print(json.dumps(out))
"""


def test_importing_the_package_and_its_options_loads_no_numba():
    res = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["package"] == [] and out["options"] == []
    assert "numba" in out["solved"]  # the probe sees Numba once a solver has run


def test_every_public_name_resolves():
    for name in flow.__all__:
        assert getattr(flow, name) is not None, name
    assert set(flow.__all__) <= set(dir(flow))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        flow.nope  # noqa: B018
