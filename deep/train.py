"""One trainer for every model: SGD or AdamW, cosine learning-rate schedule, gradient clipping, mixed
precision on CUDA only, checkpoint + resume, seeded, progress and JSON-lines log; and ``predict``.

Progress (``progress=True``): a tqdm bar per epoch on stderr only when stderr is a terminal, and one plain line per
epoch on stderr (``epoch 3/30: loss 1.2345, train accuracy 56.2%, lr 0.000854, 12.3 s``), so that a log file
gets one line per epoch and no bar.

Determinism: the shuffling of epoch e uses ``torch.Generator().manual_seed(seed + e)``; dataset augmentation
is seeded per (seed, epoch, item) (``VideoDataset.set_epoch``); the torch RNG state (dropout) is saved in the
checkpoint, so a resumed run continues as an uninterrupted one would (on CPU).

Checkpoint (``torch.save``; read back with ``torch.load(..., weights_only=True)``): ``{"model", "optimizer",
"scheduler", "epoch" (epochs done), "rng" (torch CPU RNG state), "config" (TrainConfig as a dict)}``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from idtfv.atomic import atomic_path
from idtfv.errors import FormatError, ParameterError

__all__ = ["TrainConfig", "resolve_device", "train", "predict", "make_optimizer", "load_checkpoint", "epoch_line"]


@dataclass(frozen=True)
class TrainConfig:
    """Training options.

    epochs, batch_size; optimizer "sgd" (momentum 0.9, Nesterov off) or "adamw"; lr: peak learning rate,
    decayed by a cosine over all steps (Loshchilov & Hutter 2017) after ``warmup_steps`` of linear warm-up;
    weight_decay; clip_grad: max global gradient L2 norm (0 = off); label_smoothing; device "auto"|"cpu"|"cuda";
    amp: mixed precision (float16 autocast + gradient scaling), only ever used on CUDA; seed; workers:
    DataLoader worker processes (0 = in process).
    """

    epochs: int = 10
    batch_size: int = 8
    optimizer: str = "sgd"
    lr: float = 0.01
    weight_decay: float = 5e-4
    momentum: float = 0.9
    warmup_steps: int = 0
    clip_grad: float = 20.0
    label_smoothing: float = 0.0
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    workers: int = 0

    def validate(self) -> "TrainConfig":
        if self.optimizer not in ("sgd", "adamw"):
            raise ParameterError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ParameterError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        values = (self.lr, self.weight_decay, self.clip_grad)
        if not (all(math.isfinite(v) for v in values) and self.lr > 0 and self.weight_decay >= 0
                and self.clip_grad >= 0):  # an infinite weight decay trained to NaN weights without a word
            raise ParameterError(f"need finite lr > 0, weight_decay >= 0, clip_grad >= 0; got {self.lr}, "
                                 f"{self.weight_decay}, {self.clip_grad}")
        if self.workers < 0:
            raise ParameterError(f"workers (--workers) must be >= 0 (0 = load in process), got {self.workers}")
        resolve_device(self.device)
        return self


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when available else cpu; "cuda" without a device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError("device 'cuda' requested but no CUDA device is available; use --device cpu or auto")
        return torch.device("cuda")
    raise ParameterError(f"device must be auto, cpu or cuda, got {name!r}")


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW; no weight decay on biases and norm parameters (1-d tensors)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.lr)


def _schedule(total_steps: int, warmup: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
    return factor


def load_checkpoint(path) -> dict:
    """Read a checkpoint with ``weights_only=True``; ``FormatError`` if it is not one."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FormatError(path, f"cannot read checkpoint ({type(exc).__name__}); delete it to start over") from None
    if not isinstance(ck, dict) or not {"model", "optimizer", "epoch"} <= set(ck):
        raise FormatError(path, "not a idtfv.deep.train checkpoint (needs model, optimizer, epoch); delete it to start over")
    return ck


def _atomic_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def train(model: nn.Module, dataset, *, config: TrainConfig, out_dir=None, resume: bool = True,
          progress: bool = True) -> list[dict]:
    """Train ``model`` on ``dataset`` (items ``(x, label, index)``) with cross-entropy.

    Writes ``out_dir/checkpoint.pt`` after every epoch and appends one JSON line per epoch to
    ``out_dir/log.jsonl`` (``epoch, loss, accuracy, lr, seconds``). With ``resume`` and an existing
    checkpoint, training continues after its last finished epoch. With ``progress``, a bar on a terminal and one
    :func:`epoch_line` per epoch on stderr. Returns the per-epoch log records.
    """
    config = config.validate()
    device = resolve_device(config.device)
    use_amp = config.amp and device.type == "cuda"
    torch.manual_seed(config.seed)
    model.to(device)
    optimizer = make_optimizer(model, config)
    steps_per_epoch = math.ceil(len(dataset) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(config.epochs * steps_per_epoch, config.warmup_steps))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start = 0
    out = Path(out_dir) if out_dir is not None else None
    ck_path = out / "checkpoint.pt" if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if resume and ck_path.exists():
            ck = load_checkpoint(ck_path)
            try:
                model.load_state_dict(ck["model"])
                optimizer.load_state_dict(ck["optimizer"])
                scheduler.load_state_dict(ck["scheduler"])
            except (RuntimeError, ValueError, KeyError) as exc:
                raise FormatError(ck_path, f"checkpoint does not match this model/optimizer "
                                           f"({str(exc).splitlines()[0][:120]}); delete it or choose another "
                                           "output directory") from None
            torch.set_rng_state(ck["rng"])
            start = int(ck["epoch"])
    history = []
    for epoch in range(start, config.epochs):
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=False,
                            num_workers=config.workers, generator=torch.Generator().manual_seed(config.seed + epoch))
        model.train()
        t0 = time.perf_counter()
        total, correct, loss_sum = 0, 0, 0.0
        bar = _progress(loader, progress, f"epoch {epoch + 1}/{config.epochs}")
        for x, y, _ in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.clip_grad > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            total += len(y)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss_sum / total:.3f}")
        record = {"epoch": epoch + 1, "loss": loss_sum / max(total, 1), "accuracy": correct / max(total, 1),
                  "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - t0, 3)}
        history.append(record)
        if progress:
            print(epoch_line(record, config.epochs), file=sys.stderr, flush=True)
        if out is not None:
            _atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "rng": torch.get_rng_state(),
                          "config": dataclasses.asdict(config)}, ck_path)
            with open(out / "log.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
    return history


def epoch_line(record: dict, epochs: int) -> str:
    """One epoch's log record as the line :func:`train` prints: ``epoch 3/30: loss 1.2345, train accuracy 56.2%,
    lr 0.000854, 12.3 s``."""
    return (f"epoch {record['epoch']}/{epochs}: loss {record['loss']:.4f}, train accuracy "
            f"{100 * record['accuracy']:.1f}%, lr {record['lr']:.3g}, {record['seconds']:.1f} s")


def _progress(it, enabled: bool, desc: str):
    """``it`` wrapped in a tqdm bar on stderr when ``enabled`` and stderr is a terminal; ``it`` itself otherwise
    (a bar's carriage returns would fill a log file)."""
    if not enabled or not sys.stderr.isatty():
        return it
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return it
    return tqdm(it, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


@torch.no_grad()
def predict(model: nn.Module, dataset, *, batch_size: int = 8, device: str = "auto",
            progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores and penultimate features of every item, in dataset order (eval mode).

    Returns ``scores (n_items, C)``, ``features (n_items, D)`` float32 and ``video_index (n_items,)``.
    """
    dev = resolve_device(device)
    model.to(dev).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    scores, feats, index = [], [], []
    for x, _, v in _progress(loader, progress, "predict"):
        f = model.features(x.to(dev))
        scores.append(model.fc(f).float().cpu().numpy())
        feats.append(f.float().cpu().numpy())
        index.append(np.asarray(v))
    if not scores:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return np.concatenate(scores), np.concatenate(feats), np.concatenate(index)
