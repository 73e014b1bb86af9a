"""``IDTParams.threads``: several threads for one video's per-level steps give the bytes of one thread, and the
option stays out of the results and (when 1) out of the parameter dicts."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_frames
from idtfv.idt.extractor import extract, level_groups
from idtfv.idt.params import IDTParams
from idtfv.idt.pyramid import pyramid_geometry


def test_threads_stay_out_of_the_parameter_dicts():
    assert "threads" not in IDTParams().to_dict()
    assert IDTParams(threads=3).to_dict()["threads"] == 3
    assert IDTParams.from_dict(IDTParams(threads=3).to_dict()) == IDTParams(threads=3)
    with pytest.raises(Exception, match="threads"):
        IDTParams(threads=0)


def test_level_groups_share_the_area_out():
    _, sizes = pyramid_geometry(320, 240, scales=8, scale_factor=2 ** 0.5, patch=32)
    assert level_groups(sizes, 1) == [tuple(range(len(sizes)))]
    two = level_groups(sizes, 2)
    assert sorted(s for g in two for s in g) == list(range(len(sizes)))
    area = [sum(sizes[s][0] * sizes[s][1] for s in g) for g in two]
    assert two[0] == (0,) and max(area) / min(area) < 1.1  # level 0 alone weighs about the others together
    assert level_groups(sizes[:2], 8) == [(0,), (1,)]


@pytest.mark.parametrize("preset, options", [("default", {"threads": 2}), ("fast", {"threads": 2}),
                                             ("default", {"threads": 3, "detect_humans": True, "detect_every": 2})])
def test_more_threads_give_the_bytes_of_one(preset, options):
    frames = tiny_frames(frames=24, width=160, height=120, motion=(2, 1))
    make = IDTParams if preset == "default" else IDTParams.fast
    one = extract(frames, make(**{k: v for k, v in options.items() if k != "threads"}))
    two = extract(frames, make(**options))
    assert len(one) > 0
    for name in ("meta", "traj", "hog", "hof", "mbhx", "mbhy"):
        assert getattr(one, name).tobytes() == getattr(two, name).tobytes(), name
    assert one.info == two.info and "threads" not in two.info["params"]
