"""deep/ models: output shapes, one SGD step lowers the loss, and the property tests of issue 6."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from idtfv.deep.blocks import ClipModel
from idtfv.deep.models import MODELS, build_model
from idtfv.deep.models.frame2d import build_tsn, cross_modality_init
from idtfv.deep.models.i3d import NonLocal, build_i3d, inflate_from_2d
from idtfv.deep.models.slowfast import build_slowfast
from idtfv.deep.models.tam import TAM
from idtfv.deep.models.tsm import TemporalShift, temporal_shift
from idtfv.deep.pretrained import load_pretrained
from idtfv.deep.resnet import build_resnet, inflate_state_dict
from idtfv.errors import FormatError, ParameterError

torch.set_num_threads(1)

NUM_CLASSES = 5
# Tiny inputs per model: (C, T, H, W) and the builder options.
TINY = {
    "single_frame": (3, 1, 32), "late_fusion": (3, 2, 32), "early_fusion": (3, 10, 32),
    "slow_fusion": (3, 10, 32), "spatial": (3, 1, 32), "temporal": (20, 1, 32), "tsn": (3, 3, 32),
    "c3d": (3, 8, 32), "i3d": (3, 4, 32), "nonlocal": (3, 4, 32), "slowfast": (3, 8, 32), "tsm": (3, 4, 32),
    "tam": (3, 4, 32), "cnn_lstm": (3, 3, 32),
}


def tiny_model(name: str, in_channels: int, frames: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    spec = MODELS[name]
    width = 16 if name == "slowfast" else 8
    return build_model(name, num_classes=NUM_CLASSES, in_channels=in_channels, width=width,
                       depth=10 if spec.has_depth else None, frames=frames if spec.time_arg else None)


def test_every_model_has_a_tiny_case():
    assert set(TINY) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_shape(name):
    c, t, s = TINY[name]
    model = tiny_model(name, c, t).eval()
    x = torch.randn(2, c, t, s, s, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
        f = model.features(x)
        assert y.shape == (2, NUM_CLASSES)
        assert f.ndim == 2 and f.shape[0] == 2 and f.shape[1] == model.fc.in_features
        # forward is fc(features) in eval mode (the penultimate features written to features.npz)
        torch.testing.assert_close(model.fc(f), y)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_one_step_lowers_loss(name):
    c, t, s = TINY[name]
    model = tiny_model(name, c, t)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, c, t, s, s, generator=g)
    y = torch.tensor([0, 1, 2, 3])
    for m in model.modules():  # dropout off; BN in eval so the loss is a deterministic function of the weights
        if isinstance(m, (nn.Dropout, nn.modules.batchnorm._BatchNorm)):
            m.eval()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    before = F.cross_entropy(model(x), y)
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = F.cross_entropy(model(x), y)
    assert float(after) < float(before.detach())


# ----------------------------------------------------------------------------- properties


def test_i3d_inflation_boring_video_fixed_point():
    """A clip of one repeated image through the inflated net = the 2-D net on the image (pooled features)."""
    torch.manual_seed(0)
    net2d = build_tsn(num_classes=NUM_CLASSES, depth=10, width=8)
    # non-trivial BN statistics so the comparison is not degenerate
    for m in net2d.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    net3d = inflate_from_2d(net2d, build_i3d(num_classes=NUM_CLASSES, depth=10, width=8))
    # the inflated temporal kernels are real (kt > 1 somewhere)
    assert any(isinstance(m, nn.Conv3d) and m.kernel_size[0] > 1 for m in net3d.modules())
    net2d.eval(), net3d.eval()
    img = torch.randn(2, 3, 1, 48, 48, generator=torch.Generator().manual_seed(3))
    boring = img.repeat(1, 1, 6, 1, 1)
    with torch.no_grad():
        f2 = net2d.features(img)
        f3 = net3d.features(boring)
        torch.testing.assert_close(f3, f2, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(net3d(boring), net2d(img), rtol=1e-4, atol=1e-5)


def test_inflate_state_dict_divides_by_temporal_size():
    net2d = build_resnet(dim=2, depth=10, width=4)
    net3d = build_resnet(dim=3, depth=10, width=4, temporal="i3d")
    sd = inflate_state_dict(net2d.state_dict(), net3d)
    w2 = net2d.state_dict()["stem.0.weight"]
    w3 = sd["stem.0.weight"]
    assert w3.shape == (w2.shape[0], w2.shape[1], 5, *w2.shape[2:])
    for t in range(5):
        torch.testing.assert_close(w3[:, :, t], w2 / 5)
    bad = build_resnet(dim=3, depth=10, width=8, temporal="i3d")
    with pytest.raises(ParameterError, match="cannot inflate"):
        inflate_state_dict(net2d.state_dict(), bad)


@pytest.mark.parametrize("train_mode", [False, True])
def test_nonlocal_is_identity_at_init(train_mode):
    block = NonLocal(8)
    block.train(train_mode)
    x = torch.randn(2, 8, 3, 5, 6)
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    # and not the identity once the output BN gamma is non-zero
    nn.init.ones_(block.bn.weight)
    assert not torch.allclose(block(x), x)


def test_nonlocal_matches_naive_embedded_gaussian():
    torch.manual_seed(0)
    block = NonLocal(6, subsample=False).eval()
    nn.init.ones_(block.bn.weight)
    x = torch.randn(1, 6, 2, 3, 3)
    with torch.no_grad():
        pos = x.flatten(2)[0].T                               # (P, C)
        lin = lambda conv, v: v @ conv.weight[:, :, 0, 0, 0].T + conv.bias  # noqa: E731
        th, ph, g = lin(block.theta, pos), lin(block.phi, pos), lin(block.g, pos)
        y = np.zeros((pos.shape[0], th.shape[1]))
        for i in range(pos.shape[0]):
            e = np.exp([(th[i] @ ph[j]).item() for j in range(pos.shape[0])])
            y[i] = (e[:, None] * g.numpy()).sum(0) / e.sum()
        z = lin(block.w_z, torch.tensor(y, dtype=torch.float32))
        bn = block.bn
        z = (z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        expect = x + z.T.reshape(x.shape)
        torch.testing.assert_close(block(x), expect, rtol=1e-4, atol=1e-5)


def test_tsm_shift_exact_values_on_one_hot():
    n, t, c = 2, 4, 16  # fold = 2 channels
    for src_t in range(t):
        for ch in range(c):
            x = torch.zeros(n * t, c, 1, 1)
            x.view(n, t, c)[:, src_t, ch] = 1.0
            out = temporal_shift(x, t).view(n, t, c)
            expect = torch.zeros(n, t, c)
            if ch < 2:            # backward: frame t takes t + 1
                if src_t - 1 >= 0:
                    expect[:, src_t - 1, ch] = 1
            elif ch < 4:          # forward: frame t takes t - 1
                if src_t + 1 < t:
                    expect[:, src_t + 1, ch] = 1
            else:
                expect[:, src_t, ch] = 1
            assert torch.equal(out, expect), (src_t, ch)


def test_tsm_residual_placement():
    """In a TSM net the shift sits in the residual branch: block(x) = x + F(shift(x)), identity path unshifted."""
    model = tiny_model("tsm", 3, 4)
    block = model.backbone.stages[0][0]
    assert isinstance(block.pre, TemporalShift) and isinstance(block.shortcut, nn.Identity)
    block.eval()
    x = torch.relu(torch.randn(8, block.conv1.in_channels, 5, 5))
    with torch.no_grad():
        branch = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(temporal_shift(x, 4))))))
        torch.testing.assert_close(block(x), torch.relu(x + branch))


def test_tam_global_kernels_sum_to_one_and_forward_matches_naive():
    torch.manual_seed(0)
    tam = TAM(8, 4).eval()
    for m in tam.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.1, 0.1)
    x = torch.randn(2 * 4, 8, 3, 3)
    with torch.no_grad():
        theta = tam.global_kernels(x)
        assert theta.shape == (2, 8, 3)
        torch.testing.assert_close(theta.sum(-1), torch.ones(2, 8))
        assert (theta > 0).all()
        v = tam.importance(x)
        assert v.shape == (2, 8, 4) and ((v > 0) & (v < 1)).all()
        xs = x.view(2, 4, 8, 3, 3)
        expect = torch.zeros_like(xs)
        for n in range(2):
            for c in range(8):
                for t in range(4):
                    for k in range(3):
                        s = t + k - 1
                        if 0 <= s < 4:
                            expect[n, t, c] += theta[n, c, k] * v[n, c, s] * xs[n, s, c]
        torch.testing.assert_close(tam(x), expect.view_as(x), rtol=1e-5, atol=1e-6)


def test_slowfast_pathway_frame_counts_and_lateral_fusion():
    model = build_slowfast(num_classes=NUM_CLASSES, depth=10, width=16, alpha=8, beta_inv=8).eval()
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 16, 1, 1).expand(1, 3, 16, 32, 32).contiguous()
    slow, fast = model.pathway_inputs(x)
    assert slow.shape[2] == 2 and fast.shape[2] == 16
    assert slow[0, 0, :, 0, 0].tolist() == [0.0, 8.0]           # every alpha-th frame
    assert fast.shape[1] == 3 and model.fast.stem[0].out_channels == 2  # beta = 1/8 of the channels
    # lateral: kernel 5x1x1, time stride alpha, 2 beta C channels, output time = slow time
    lat = model.laterals[0][0]
    assert lat.kernel_size == (5, 1, 1) and lat.stride == (8, 1, 1) and lat.out_channels == 2 * 2
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, i=i: seen.__setitem__(i, (inp[0].shape, out.shape)))
             for i, m in enumerate(model.laterals)]
    with torch.no_grad():
        s, f = model.pathway_features(x)
    for h in hooks:
        h.remove()
    for i in range(4):
        (fin, fout) = seen[i]
        assert fin[2] == 16 and fout[2] == 2
    assert s.shape[2] == 2 and f.shape[2] == 16
    with pytest.raises(ParameterError, match="divisible by alpha"):
        model(torch.zeros(1, 3, 12, 32, 32))


def test_tsn_consensus_is_mean_of_snippet_scores():
    torch.manual_seed(0)
    model = build_tsn(num_classes=NUM_CLASSES, depth=10, width=8).eval()
    x = torch.randn(2, 3, 5, 32, 32)
    with torch.no_grad():
        per_snippet = torch.stack([model(x[:, :, k:k + 1]) for k in range(5)], dim=1)  # (N, K, C)
        torch.testing.assert_close(model(x), per_snippet.mean(dim=1), rtol=1e-5, atol=1e-6)


def test_cross_modality_init():
    w = torch.randn(4, 3, 7, 7)
    out = cross_modality_init(w, 20)
    assert out.shape == (4, 20, 7, 7)
    for ch in range(20):
        torch.testing.assert_close(out[:, ch], w.mean(dim=1))


def test_load_pretrained_report_inflation_and_cross_modality(tmp_path):
    torch.manual_seed(0)
    rgb2d = build_tsn(num_classes=NUM_CLASSES, depth=10, width=8)
    path = tmp_path / "rgb.pt"
    torch.save({"module." + k: v for k, v in rgb2d.state_dict().items()}, path)
    # same net: everything matches
    rep = load_pretrained(build_tsn(num_classes=NUM_CLASSES, depth=10, width=8), path)
    assert not rep.missing and not rep.mismatched and not rep.adapted and len(rep.matched) == len(rgb2d.state_dict())
    # flow net: first conv adapted by cross-modality init
    flow = build_tsn(num_classes=NUM_CLASSES, in_channels=20, depth=10, width=8)
    rep = load_pretrained(flow, path)
    assert rep.adapted == ["backbone.stem.0.weight"]
    torch.testing.assert_close(flow.backbone.stem[0].weight, cross_modality_init(rgb2d.backbone.stem[0].weight, 20))
    # 3-D net: conv kernels inflated, different classifier size reported as a mismatch
    i3d = build_i3d(num_classes=3, depth=10, width=8)
    rep = load_pretrained(i3d, path)
    assert "backbone.stem.0.weight" in rep.adapted
    assert {k for k, _, _ in rep.mismatched} == {"fc.weight", "fc.bias"}
    torch.testing.assert_close(i3d.backbone.stem[0].weight.sum(2), rgb2d.backbone.stem[0].weight)
    # not a state dict
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(FormatError, match="bad.pt"):
        load_pretrained(i3d, tmp_path / "bad.pt")
    with pytest.raises(FormatError, match="not found"):
        load_pretrained(i3d, tmp_path / "absent.pt")


def test_all_models_are_clip_models_and_unknown_name_errors():
    for name in MODELS:
        assert isinstance(tiny_model(name, *TINY[name][:2]), ClipModel)
    with pytest.raises(ParameterError, match="unknown model"):
        build_model("resnext", num_classes=2, in_channels=3)


def test_two_stream_averages_softmax_of_both_streams():
    from idtfv.deep.models import TWO_STREAM

    torch.manual_seed(0)
    net = TWO_STREAM(num_classes=NUM_CLASSES, in_channels=20, depth=10, width=8).eval()
    rgb, flow = torch.randn(2, 3, 1, 32, 32), torch.randn(2, 20, 1, 32, 32)
    with torch.no_grad():
        out = net(rgb, flow)
        expect = 0.5 * (net.spatial(rgb).softmax(1) + net.temporal(flow).softmax(1))
    assert out.shape == (2, NUM_CLASSES)
    torch.testing.assert_close(out, expect)
    torch.testing.assert_close(out.sum(1), torch.ones(2))


def test_cli_model_names_are_the_models():
    """The torch-free names the CLI offers (idtfv.deep.names) are exactly MODELS' keys, in order."""
    from idtfv.deep.data import MODALITIES
    from idtfv.deep.names import MODALITIES as NAMES_MODALITIES, MODEL_NAMES

    assert tuple(MODELS) == MODEL_NAMES
    assert MODALITIES is NAMES_MODALITIES
