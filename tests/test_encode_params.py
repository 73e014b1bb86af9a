"""EncodeParams (idtfv.encoding.params): validation, canonical values, the cache key, and the ``idtfv encode``
options generated from its fields (choices, defaults shown, one-line errors naming the option)."""

from __future__ import annotations

import dataclasses

import pytest

from idtfv import cli
from idtfv.encoding.cli import add_encode
from idtfv.encoding.params import CHANNELS, DEFAULT_K, METHODS, EncodeParams
from idtfv.errors import ParameterError


def test_defaults_and_canonical_values():
    p = EncodeParams()
    assert (p.method, p.k, p.pca_samples, p.pca_whiten, p.pyramid, p.gmm_iter, p.seed) == \
        ("fisher", None, 256_000, False, "1x1x1", 30, 0)
    assert p.channel_names == ("traj", "hog", "hof", "mbhx", "mbhy") == CHANNELS
    assert p.codebook_size == 256 and EncodeParams(method="bof").codebook_size == 4000
    q = EncodeParams(pyramid=" 1x1x1, 1x3x1,1x1x2 ", channels=["hog", "mbhx"])
    assert q.pyramid == "1x1x1,1x3x1,1x1x2" and q.grids == ((1, 1, 1), (1, 3, 1), (1, 1, 2))
    assert q.channels == "hog,mbhx" and q.channel_names == ("hog", "mbhx")
    assert EncodeParams(pyramid=[(1, 1, 1), (1, 3, 1)]).pyramid == "1x1x1,1x3x1"
    # same options, however written: equal objects, equal cache keys
    assert EncodeParams(channels="hog, mbhx") == EncodeParams(channels=("hog", "mbhx"))


def test_to_dict_round_trip_and_cache_key():
    p = EncodeParams(method="vlad", k=8, pca_samples=1000, pca_whiten=True, pyramid="1x1x1,1x1x2",
                     channels="hof,traj", gmm_iter=3, seed=7)
    d = p.to_dict()
    assert list(d) == [f.name for f in dataclasses.fields(EncodeParams)]
    assert EncodeParams.from_dict(d) == p and p.replace(seed=8).seed == 8
    assert EncodeParams.from_dict({"channels": ["hof", "traj"]}).channels == "hof,traj"  # JSON list
    # the pooling grid does not change the codebook; every other option does
    assert p.codebook_key() == {k: v for k, v in d.items() if k != "pyramid"}
    assert p.replace(pyramid="1x1x1").codebook_key() == p.codebook_key()
    assert p.replace(seed=8).codebook_key() != p.codebook_key()
    with pytest.raises(ParameterError, match="unknown option.*ks"):
        EncodeParams.from_dict({"ks": 3})


@pytest.mark.parametrize("field,value", [
    ("method", "pca"), ("k", 0), ("k", 2.5), ("pca_samples", 1), ("pca_samples", True), ("pca_whiten", 1),
    ("gmm_iter", 0), ("seed", -1), ("seed", 2**32),
    ("pyramid", "1x2"), ("pyramid", "0x1x1"), ("pyramid", ""), ("pyramid", 3), ("pyramid", "1000x1000x1"),
    ("pyramid", "4x4x4,1x1x1"),
    ("channels", "hog,foo"), ("channels", "hog,hog"), ("channels", ""), ("channels", 3),
])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ParameterError, match=rf"EncodeParams\.{field}: expected .*got"):
        EncodeParams(**{field: value})


def test_the_pyramid_may_have_at_most_64_cells_in_all():
    """``--pyramid 1000x1000x1`` made every video fail with NumPy's "Unable to allocate 61.0 GiB" and still wrote a
    0-video feature file: refused up front, naming the bound and the count."""
    from idtfv.encoding.params import MAX_PYRAMID_CELLS

    assert MAX_PYRAMID_CELLS == 64 and EncodeParams(pyramid="4x4x4").grids == ((4, 4, 4),)
    with pytest.raises(ParameterError, match="at most 64 cells in all .*not 65"):
        EncodeParams(pyramid="4x4x4,1x1x1")


def _encode_parser():
    return cli.build_parser(commands={"encode": add_encode})


def _encode_actions():
    sub = next(a for a in _encode_parser()._actions if a.dest == "command")
    return {a.dest: a for a in sub.choices["encode"]._actions}


def test_encode_options_are_generated_from_the_fields():
    actions = _encode_actions()
    for f in dataclasses.fields(EncodeParams):
        action = actions[f.name]
        assert action.option_strings[0] == "--" + f.name.replace("_", "-")
        assert action.default is None  # not given: the dataclass default applies
    assert tuple(actions["method"].choices) == METHODS
    assert f"default: {EncodeParams().pca_samples}" in actions["pca_samples"].help
    assert ",".join(CHANNELS) in actions["channels"].help
    assert all(f"{m} {k}" in actions["k"].help for m, k in DEFAULT_K.items())
    # run-environment options are the command's, not the params'
    assert {"jobs", "scheduler", "force", "cache", "out"} <= set(actions)
    assert not {"jobs", "scheduler", "force", "cache", "out"} & {f.name for f in dataclasses.fields(EncodeParams)}


def test_parsed_options_build_the_params():
    from idtfv.options import params_from_args

    argv = ["encode", "--manifest", "m.csv", "--features", "f.json", "--cache", "c", "--out", "o.npz"]
    args = _encode_parser().parse_args(argv)
    assert params_from_args(args, EncodeParams) == EncodeParams()
    args = _encode_parser().parse_args(argv + ["--method", "bof", "--k", "9", "--pca-whiten", "--channels",
                                               "hog,mbhy", "--pyramid", "1x1x1,1x3x1", "--seed", "4"])
    assert params_from_args(args, EncodeParams) == EncodeParams(method="bof", k=9, pca_whiten=True,
                                                                channels="hog,mbhy", pyramid="1x1x1,1x3x1", seed=4)


@pytest.mark.parametrize("option,value", [("--pca-samples", "1"), ("--gmm-iter", "0"), ("--channels", "hog,foo"),
                                          ("--pyramid", "1x2"), ("--seed", "-3"), ("--k", "0")])
def test_bad_option_is_one_error_line_naming_it(tmp_path, capsys, option, value):
    argv = ["encode", "--manifest", str(tmp_path / "m.csv"), "--features", str(tmp_path / "f.json"), "--cache",
            str(tmp_path / "c"), "--out", str(tmp_path / "o.npz"), option, value]
    assert cli.main(argv, commands={"encode": add_encode}) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert option in err and "expected" in err
    assert not (tmp_path / "o.npz").exists()


def test_stage_functions_take_only_encode_params(tmp_path):
    from idtfv.encoding.stage import run_encode
    from idtfv.encoding.streaming import run_streaming_encode

    for run in (run_encode, run_streaming_encode):
        with pytest.raises(ParameterError, match="expected an EncodeParams"):
            run(tmp_path / "m.csv", tmp_path / "f.json", {"k": 3}, split=1, cache=tmp_path, out=tmp_path / "o.npz")
