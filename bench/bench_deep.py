"""Benchmark: clips/s of forward + backward for every model of ``idtfv.deep.MODELS`` at its standard input size.

Each model runs at its standard input (frames x crop from ``ModelSpec``: e.g. TSN 3 x 224^2, C3D 16 x 112^2,
I3D / Non-local / SlowFast 32 x 224^2, TSM / TAM 8 x 224^2) on a **reduced batch** (default 1 clip; training
uses 8-64 on GPUs), with **widths divided by** ``--width-div`` (default 4, so ~16x fewer FLOPs than the
standard nets; ``--width-div 1`` for the standard widths) and ResNet depth 18 for every ResNet backbone
(SlowFast's standard is R50: ``--depth 50`` gives it). The reductions keep the script under ~2 minutes on 2
shared CPU cores. The baseline, timed in the same run, is the single-frame spatial net
(ResNet-18 on one 224^2 RGB frame); ratios are relative to it. One warm-up step, then the best of ``--reps``
timed steps (SGD, cross-entropy), as clips per wall second and clips per CPU second of this process (1 thread
by default: on a loaded, shared machine CPU time is the stable measure). CPU unless ``--device cuda``.

Usage: ``python bench/bench_deep.py [--reps 2] [--batch 1] [--threads 1] [--models tsn,i3d] [--device cpu]
[--no-write]``; appends/updates the ``## deep`` section of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

from idtfv.deep.data import MODALITIES
from idtfv.deep.stage import SNIPPET_LEN
from idtfv.deep.models import MODELS, build_model

from _results import machine, write_section  # noqa: E402  (bench/ is the script's directory)

SECTION = "## deep"
BASELINE = "spatial"


def input_shape(name: str) -> tuple[int, int, int, int]:
    """(C, T, H, W) of the standard RGB input (the temporal net: a 2L = 20 channel flow stack)."""
    spec = MODELS[name]
    c = MODALITIES["flow"][0] * SNIPPET_LEN["flow"] if name == "temporal" else 3
    return c, spec.frames, spec.size, spec.size


def clips_per_second(name: str, *, batch: int, reps: int, depth: int, width_div: int,
                     device: torch.device) -> tuple[float, float]:
    """(clips per wall second, clips per CPU second of this process), best of ``reps`` steps."""
    spec = MODELS[name]
    c, t, h, w = input_shape(name)
    torch.manual_seed(0)
    width = max(8, spec.width // width_div) if name != "slowfast" else max(8, 64 // width_div)
    model = build_model(name, num_classes=101, in_channels=c, width=width,
                        depth=depth if spec.has_depth else None).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(batch, c, t, h, w, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    wall, cpu = [], []
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return batch / min(wall), batch / min(cpu)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--depth", type=int, default=18)
    p.add_argument("--width-div", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        print(f"error: unknown model(s) {unknown}; choose from {', '.join(MODELS)}", file=sys.stderr)
        return 2
    names = [BASELINE] + [n for n in names if n != BASELINE]  # the baseline is timed first
    rates, cpu_rates = {}, {}
    for name in names:
        rates[name], cpu_rates[name] = clips_per_second(name, batch=args.batch, reps=args.reps, depth=args.depth,
                                                        width_div=args.width_div, device=device)
        c, t, h, w = input_shape(name)
        print(f"{name:13s} {c:2d}x{t:2d}x{h}x{w}  {rates[name]:8.3f} clips/s wall  {cpu_rates[name]:8.3f} "
              f"clips/CPU-s  x{cpu_rates[name] / cpu_rates[BASELINE]:.3f} vs {BASELINE} (CPU time)", flush=True)
    lines = [SECTION, "",
             f"`python bench/bench_deep.py --reps {args.reps} --batch {args.batch} --threads {args.threads} "
             f"--width-div {args.width_div} --device {args.device}` on {machine()} ({os.cpu_count()} "
             f"cores visible), torch {torch.__version__}. Forward + backward + SGD step at the standard input "
             f"size, batch {args.batch} (reduced), ResNet depth {args.depth}, widths / {args.width_div} "
             f"(reduced); best of {args.reps} steps after a warm-up. `clips/CPU-s` divides by this process's "
             "CPU time, which a shared, loaded machine distorts far less than wall time; the ratio is "
             f"clips/CPU-s relative to `{BASELINE}` (ResNet-{args.depth}, one 224^2 frame) in the same run.", "",
             "| model | input C x T x H x W | clips/s (wall) | clips/CPU-s | ratio |", "|---|---|---:|---:|---:|"]
    for name, r in rates.items():
        c, t, h, w = input_shape(name)
        lines.append(f"| {name} | {c} x {t} x {h} x {w} | {r:.3f} | {cpu_rates[name]:.3f} | "
                     f"{cpu_rates[name] / cpu_rates[BASELINE]:.3f} |")
    if not args.no_write:
        write_section(SECTION, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
