"""The descriptor layout (idtfv.idt.layout): LEAR's 436 columns, the real extractor's widths for other options, and
the Trajectories container and LEAR text I/O of a non-default layout."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_frames
from idtfv.errors import FormatError, ParameterError
from idtfv.idt import DescriptorLayout, IDTParams, Trajectories, extract, load_trajectories


def test_reference_layout_is_lears_436_columns():
    # planted truth: LEAR's DenseTrackStab output format (10 + 30 + 96 + 108 + 96 + 96 columns)
    layout = DescriptorLayout()
    assert layout.widths == {"meta": 10, "traj": 30, "hog": 96, "hof": 108, "mbhx": 96, "mbhy": 96}
    assert list(layout.widths) == list(DescriptorLayout.BLOCK_NAMES)
    assert list(layout.channel_widths) == list(DescriptorLayout.CHANNELS) == ["traj", "hog", "hof", "mbhx", "mbhy"]
    assert layout.n_columns == 436
    assert DescriptorLayout.from_params(IDTParams()) == layout == DescriptorLayout.from_info({})


def test_from_params_info_and_dicts_agree():
    p = IDTParams(track_length=9, nxy_cells=1, nt_cells=3)
    layout = DescriptorLayout.from_params(p)
    assert layout == DescriptorLayout(track_length=9, nxy_cells=1, nt_cells=3)
    assert DescriptorLayout.from_params(p.to_dict()) == layout
    assert DescriptorLayout.from_info({"params": p.to_dict(), "frames": 12}) == layout
    assert DescriptorLayout.from_params({"track_length": 9, "nxy_cells": 1}) == layout  # the rest: IDTParams'
    # hand-computed: traj 2*9; 1x1x3 cells of 8 / 9 / 8 / 8 bins
    assert layout.widths == {"meta": 10, "traj": 18, "hog": 24, "hof": 27, "mbhx": 24, "mbhy": 24}
    assert layout.n_columns == 127
    assert DescriptorLayout(**layout.to_dict()) == layout


@pytest.mark.parametrize("bad", [{"track_length": 0}, {"nxy_cells": 2.0}, {"nt_cells": True}])
def test_bad_values_are_parameter_errors(bad):
    with pytest.raises(ParameterError, match=next(iter(bad))):
        DescriptorLayout(**bad)
    with pytest.raises(ParameterError, match="info"):
        DescriptorLayout.from_info({"params": [1, 2]})


@pytest.mark.parametrize("options", [{}, {"track_length": 9}, {"track_length": 8, "nxy_cells": 1, "nt_cells": 2},
                                     {"track_length": 12, "nxy_cells": 4, "nt_cells": 4}])
def test_layout_widths_are_the_real_extractors(options):
    """The invariant: whatever the options, the extractor's arrays are exactly as wide as their layout says."""
    params = IDTParams(**options)
    tracks = extract(tiny_frames(frames=20, width=80, height=64, motion=(2, 1)), params)
    assert len(tracks) > 0
    layout = DescriptorLayout.from_params(params)
    assert {name: getattr(tracks, name).shape[1] for name in layout.widths} == layout.widths
    assert tracks.to_lear().shape == (len(tracks), layout.n_columns)
    assert DescriptorLayout.from_info(tracks.info) == layout


def test_a_video_without_trajectories_has_its_layouts_empty_blocks():
    params = IDTParams(track_length=9)
    tracks = extract(tiny_frames(frames=5), params)  # no track of 9 steps can finish in 5 frames
    assert len(tracks) == 0
    assert tracks.traj.shape == (0, 18) and tracks.hof.shape == (0, 108)


def _random_tracks(layout: DescriptorLayout, n=6, seed=0) -> Trajectories:
    rng = np.random.default_rng(seed)
    arrays = {k: rng.normal(size=(n, w)).astype(np.float32) for k, w in layout.widths.items()}
    params = IDTParams(**layout.to_dict()).to_dict()
    return Trajectories(**arrays, info={"params": params, "frames": 20})


@pytest.mark.parametrize("name", ["t.txt", "t.txt.gz"])
def test_lear_text_of_another_layout_round_trips_with_its_layout(tmp_path, name):
    layout = DescriptorLayout(track_length=9, nxy_cells=1, nt_cells=3)
    t = _random_tracks(layout)
    path = t.save(tmp_path / name, format="lear")
    u = load_trajectories(path, layout=layout)
    for k in layout.widths:
        np.testing.assert_array_equal(getattr(u, k), getattr(t, k))
    with pytest.raises(FormatError, match="expected 436 columns"):  # text carries no options: the reference's
        load_trajectories(path)


def test_npz_knows_its_layout_and_checks_a_given_one(tmp_path):
    layout = DescriptorLayout(track_length=9)
    t = _random_tracks(layout)
    path = t.save(tmp_path / "t.npz", compact=False)
    u = load_trajectories(path)
    assert u.traj.shape == (6, 18)
    assert load_trajectories(path, layout=layout).traj.shape == (6, 18)
    with pytest.raises(FormatError, match=r"t\.npz.*'traj' is 18 wide, expected 30"):
        load_trajectories(path, layout=DescriptorLayout())


def test_blocks_must_match_the_layout_of_info_params():
    layout = DescriptorLayout(track_length=9)
    t = _random_tracks(layout)
    arrays = {k: getattr(t, k) for k in layout.widths}
    with pytest.raises(ValueError, match=r"traj: expected shape \(n, 30\)"):  # params say L = 15
        Trajectories(**arrays, info={"params": IDTParams().to_dict()})
    # without params (hand-made arrays, LEAR text) only meta is checked; empty blocks follow info's layout
    assert Trajectories(**arrays, info={}).traj.shape == (6, 18)
    assert Trajectories(info=t.info).hog.shape == (0, 96) and Trajectories(info=t.info).traj.shape == (0, 18)
