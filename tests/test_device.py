"""``IDTParams.device``: the option, its resolution to cpu/cuda, its place in the cache key, and the CLIs' errors."""

from __future__ import annotations

import dataclasses
import sys
import types
import warnings

import pytest

import _cuda_on_cpu
from conftest import tiny_frames
from idtfv.errors import ParameterError
from idtfv.idt import IDTParams, extract
from idtfv.idt import device as device_mod


@pytest.fixture
def no_cupy(monkeypatch):
    """``import cupy`` fails, whatever is installed; the once-per-process warning is armed again."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setattr(device_mod, "_warned", False)


def _cupy_with(count: int):
    cp = types.ModuleType("cupy")
    cp.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: count))
    return cp


def test_device_is_validated_and_left_out_of_cpu_dicts():
    names = {f.name for f in dataclasses.fields(IDTParams)}
    assert "device" in names and IDTParams().device == "cpu"
    # CPU runs keep the dicts (cache keys, info["params"]) they had before the option existed
    for params in (IDTParams(), IDTParams.fast(), IDTParams(device="cpu", seed=3)):
        d = params.to_dict()
        assert set(d) == names - {"device", "threads"}  # threads=1 is left out too (tests/test_threads.py)
        assert IDTParams.from_dict(d) == params
    for device in ("cuda", "auto"):
        p = IDTParams(device=device)
        assert p.to_dict()["device"] == device and IDTParams.from_dict(p.to_dict()) == p
        assert p.to_dict() != IDTParams().to_dict()  # a different stage directory
    with pytest.raises(ParameterError, match="device"):
        IDTParams(device="gpu")


def test_features_stage_key_of_the_default_run_has_no_device():
    from idtfv.cache import param_hash
    from idtfv.idt.stage import features_params

    params = features_params()
    assert "device" not in params["idt"]
    with_device = {"idt": {**params["idt"], "device": "cuda"}}
    assert param_hash(with_device) != param_hash(params)


def test_resolve_without_cupy(no_cupy):
    assert device_mod.resolve_device("cpu") == "cpu"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert device_mod.resolve_device("auto") == "cpu"
        assert device_mod.resolve_device("auto") == "cpu"
    assert len(caught) == 1 and issubclass(caught[0].category, RuntimeWarning)  # once per process
    assert "running on the CPU" in str(caught[0].message)
    with pytest.raises(ParameterError) as exc:
        device_mod.resolve_device("cuda")
    msg = str(exc.value)
    assert "\n" not in msg and "cupy-cuda12x" in msg and "--device cpu" in msg
    with pytest.raises(ParameterError, match="expected one of cpu, cuda, auto"):
        device_mod.resolve_device("gpu")
    assert not device_mod.cuda_available()


def test_resolve_with_a_device_and_with_none(monkeypatch):
    monkeypatch.setattr(device_mod, "_warned", False)
    monkeypatch.setitem(sys.modules, "cupy", _cupy_with(1))
    assert device_mod.resolve_device("auto") == "cuda" and device_mod.resolve_device("cuda") == "cuda"
    assert device_mod.resolve_device("cpu") == "cpu"
    monkeypatch.setitem(sys.modules, "cupy", _cupy_with(0))
    with pytest.warns(RuntimeWarning, match="no usable CUDA device"):
        assert device_mod.resolve_device("auto") == "cpu"
    with pytest.raises(ParameterError, match="CuPy sees no CUDA device"):
        device_mod.resolve_device("cuda")


def test_extract_on_cuda_without_a_device_is_one_error(no_cupy):
    frames = tiny_frames(frames=4)
    with pytest.raises(ParameterError, match="device 'cuda'"):
        extract(frames, IDTParams(device="cuda"))
    with pytest.warns(RuntimeWarning, match="running on the CPU"):
        auto = extract(frames, IDTParams(device="auto", track_length=3, nt_cells=1))
    cpu = extract(frames, IDTParams(track_length=3, nt_cells=1))
    assert auto.info["device"] == "cpu" and len(auto) == len(cpu) > 0


def test_cli_device_cuda_without_a_device_exits_2_with_one_line(no_cupy, tiny_video, tmp_path, capsys):
    from idtfv.cli import main as idtfv_main
    from idtfv.idt.cli import main as extract_main

    video = tiny_video()
    out = tmp_path / "t.npz"
    assert extract_main([str(video), "-o", str(out), "-q", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: device 'cuda'") and not out.exists()

    argv = ["features", "--manifest", str(tmp_path / "m.csv"), "--cache", str(tmp_path / "c"),
            "--out", str(tmp_path / "f.json"), "--device", "cuda"]
    assert idtfv_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: device 'cuda'") and not (tmp_path / "c").exists()


def test_cli_device_auto_without_a_device_warns_in_one_line(no_cupy, tiny_video, tmp_path, capsys):
    """``--device auto`` with no GPU: one ``warning:`` line (not Python's file:line block), then the CPU's output."""
    from idtfv.idt.cli import main as extract_main

    video = tiny_video(frames=8)
    out = tmp_path / "t.npz"
    assert extract_main([str(video), "-o", str(out), "-q", "--device", "auto", "--track-length", "3",
                         "--nt-cells", "1"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and err[0].startswith("warning: device 'auto': no usable CUDA device")
    assert err[0].endswith("running on the CPU") and out.exists()


def test_cli_device_option_reaches_the_params():
    from idtfv.idt import cli as idt_cli

    args = idt_cli.build_parser().parse_args(["v.avi", "--device", "auto"])
    assert idt_cli._idt_params(args, idt_cli.TRAJECTORY_FIELDS).device == "auto"
    args = idt_cli.build_parser().parse_args(["v.avi"])
    assert idt_cli._idt_params(args, idt_cli.TRAJECTORY_FIELDS).device == "cpu"


def test_the_stand_in_cupy_reports_one_device(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _cuda_on_cpu.fake_cupy())
    assert device_mod.cuda_available()
