"""The files of a run folder that grow epoch by epoch: ``metrics.jsonl`` / ``metrics.csv`` (and
TensorBoard when installed)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from . import checkpoint as ckpt_io


class MetricsLog:
    """One row per epoch to ``metrics.jsonl`` and ``metrics.csv`` (and TensorBoard when installed)."""

    def __init__(self, out: Path, tensorboard: bool = True):
        self.out = out
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(out / "tensorboard"))
            except Exception:  # noqa: BLE001 - tensorboard is optional
                self.writer = None

    @staticmethod
    def flat(row: dict, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in row.items():
            if isinstance(v, dict):
                out.update(MetricsLog.flat(v, f"{prefix}{k}."))
            elif isinstance(v, (int, float, str)) or v is None:
                out[f"{prefix}{k}"] = v
        return out

    def write(self, row: dict) -> None:
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        rows = [self.flat(json.loads(line)) for line in open(self.out / "metrics.jsonl", encoding="utf-8")]
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        lines = [",".join(keys)] + [",".join("" if r.get(k) is None else str(r[k]) for k in keys) for r in rows]
        ckpt_io.write_text_atomic("\n".join(lines) + "\n", self.out / "metrics.csv")
        if self.writer is not None:
            for k, v in self.flat(row).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self.writer.add_scalar(k, v, row.get("epoch", 0))
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
