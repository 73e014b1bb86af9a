"""Dask is unauthenticated pickle unless secured: every example address binds to 127.0.0.1, the docs say how to
secure a cluster with TLS, and a tls:// scheduler without the client's TLS settings (or a plain one refused by
``require-encryption``) is one ``error:`` line, exit 2, not a traceback."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import write_tiny_video

from idtfv.cli import main as idtfv_main

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "DASK.md"
#: A scheduler address in a command example: tcp:// or tls:// and a host.
ADDRESS = re.compile(r"\b(tcp|tls)://([A-Za-z0-9_.-]+)(?::\d+)?")


def _addresses(text: str) -> list[tuple[str, str]]:
    return ADDRESS.findall(text)


def test_examples_bind_to_localhost_and_point_to_the_security_notes(capsys):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    help_text = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True,
                               check=True).stdout
    for name, text in (("README.md", readme), ("make help", help_text)):
        found = _addresses(text)
        assert found, f"{name}: no scheduler example"
        assert all(host == "127.0.0.1" for _, host in found), f"{name}: {found}"
        assert "docs/DASK.md" in text, name
    assert idtfv_main(["features", "--help"]) == 0
    features_help = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    assert "Dask scheduler address (tcp://127.0.0.1:8786)" in features_help and "docs/DASK.md" in features_help


def test_dask_doc_secures_with_mutual_tls_before_any_network_address():
    doc = DOC.read_text(encoding="utf-8")
    # every tcp:// address in the doc is the local one; the cluster network only appears as tls://
    assert all(host == "127.0.0.1" for scheme, host in _addresses(doc) if scheme == "tcp")
    assert any(scheme == "tls" and host == "HEAD" for scheme, host in _addresses(doc))
    for needed in ("--tls-ca-file", "--tls-cert", "--tls-key", "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True",
                   "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT", "--dashboard-address 127.0.0.1:8787"):
        assert needed in doc, needed
    # the client settings the doc exports are the keys distributed's Security reads
    import dask

    from distributed.security import Security

    with dask.config.set({"distributed.comm.tls.ca-file": "ca.pem", "distributed.comm.tls.client.cert": "c.pem",
                          "distributed.comm.tls.client.key": "k.pem", "distributed.comm.require-encryption": True}):
        sec = Security()
    assert (sec.tls_ca_file, sec.tls_client_cert, sec.tls_client_key, sec.require_encryption) == \
        ("ca.pem", "c.pem", "k.pem", True)


@pytest.fixture
def manifest(tmp_path):
    write_tiny_video(tmp_path / "videos" / "a" / "a1.avi", frames=4)
    path = tmp_path / "manifest.csv"
    path.write_text("video_id,path,label,label_name,group,split1,frames,fps,width,height\n"
                    "a1,videos/a/a1.avi,0,a,g1,test,4,25.0,64,48\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("address, config", [
    ("tls://127.0.0.1:9", {}),  # no client certificate configured
    ("tcp://127.0.0.1:9", {"distributed.comm.require-encryption": True}),  # TLS required, plain address given
])
def test_tls_misconfiguration_is_one_error_line(manifest, tmp_path, capsys, address, config):
    import dask

    with dask.config.set(config):
        rc = idtfv_main(["flow", "--manifest", str(manifest), "--out", str(tmp_path / "out"), "--method",
                         "farneback", "--scheduler", address])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot connect to the Dask scheduler at {address}")
    assert "docs/DASK.md" in lines[0] and "Traceback" not in err


def test_a_failed_connection_leaves_no_half_made_client(tmp_path):
    """The Client whose constructor failed is finalised before the error reaches the caller, not by a garbage
    collection at some later moment (its __del__ closes its event loop; run inside the next Client's start it
    deadlocked a test process, and at interpreter exit it waits 60 s)."""
    import gc

    from distributed import Client

    from idtfv.errors import ParameterError
    from idtfv.runner import run_stage

    address = "tls://127.0.0.1:9"  # no client certificate configured: the constructor raises
    gc.disable()  # no collection by chance: only the runner's own may finalise it
    try:
        with pytest.raises(ParameterError, match="cannot connect to the Dask scheduler"):
            run_stage("toy", dict, [], params={}, cache_root=tmp_path, scheduler=address)
        # (type(), not isinstance(): that reads __class__, which some modules in gc.get_objects() warn about)
        left = [o for o in gc.get_objects() if type(o) is Client and getattr(o, "_start_arg", None) == address]
    finally:
        gc.enable()
    assert left == []
