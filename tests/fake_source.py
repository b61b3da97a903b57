"""A small in-memory recording with the interface of ``runtime.data.sources`` (Recording), for runtime tests.

``events(side, t0, t1)`` returns an already encoded SBT-like array; ``identity_encoder`` passes it on
(the fake ``runtime.data.sources.windows`` uses it by default).
``install()`` registers fake ``runtime.data.sources`` / ``runtime.data.encoding`` modules (for a subprocess that
must run the command line without the real data layer).
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np

FB = 19.941772


class FakeRecording:
    """Deterministic stereo windows with ground truth at every ``window_us``."""

    kind = "fake"

    def __init__(
        self,
        *,
        height: int = 8,
        width: int = 12,
        bins: int = 5,
        seconds: float = 1.0,
        window_us: int = 50_000,
        seed: int = 0,
        gt: bool = True,
        fb: float | None = FB,
        invalid_gt_index: int | None = None,
    ) -> None:
        self.height, self.width, self.bins = height, width, bins
        self.fb = fb
        self.t_start_us = 0
        self.t_end_us = int(seconds * 1e6)
        self.window_us = window_us
        self.seed = seed
        self.gt_timestamps_us = (
            np.arange(window_us, self.t_end_us + 1, window_us, dtype=np.int64) if gt else None
        )
        self.invalid_gt_index = invalid_gt_index
        self.closed = False

    def events(self, side: str, t0: int, t1: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 0 if side == "left" else 1, t0])
        mask = rng.random((self.bins, self.height, self.width)) < 0.3
        sign = rng.choice(np.array([-1.0, 1.0], np.float32), size=mask.shape)
        return (mask * sign).astype(np.float32)

    def disparity(self, i: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 7, i])
        d = rng.uniform(2.0, 12.0, size=(self.height, self.width)).astype(np.float32)
        d[: self.height // 4] = np.nan
        if i == self.invalid_gt_index:
            d[:] = np.nan
        return d

    def close(self) -> None:
        self.closed = True


def identity_encoder(events: Any, t0: int, t1: int, bins: int, height: int, width: int) -> np.ndarray:
    """The fake recording's events are already encoded."""
    return events


def fake_modules() -> tuple[types.ModuleType, types.ModuleType]:
    """Stand-ins for ``runtime.data.sources`` (synthetic only, identity encoder) and ``runtime.data.encoding``
    (identity SBT)."""
    sources = types.ModuleType("runtime.data.sources")

    def open_recording(
        path: str | None = None, *, seed: int = 0, seconds: float = 1.0, height: int = 260, width: int = 346
    ) -> FakeRecording:
        if path is not None:
            raise OSError(f"fake source reads no files ({path})")
        return FakeRecording(height=height, width=width, seconds=seconds, seed=seed)

    from runtime.data.sources import Window
    from runtime.data.sources import windows as real_windows
    from runtime.data.tiling import window_plan

    def windows(recording: Any, *, encoder: Any = None, **options: Any) -> Any:
        return real_windows(recording, encoder=encoder or identity_encoder, **options)

    sources.open_recording = open_recording  # type: ignore[attr-defined]
    sources.windows = windows  # type: ignore[attr-defined]
    sources.Window = Window  # type: ignore[attr-defined]
    sources.window_plan = window_plan  # type: ignore[attr-defined]
    encoding = types.ModuleType("runtime.data.encoding")
    encoding.sbt = identity_encoder  # type: ignore[attr-defined]
    return sources, encoding


def install() -> None:
    """Register the fake ``runtime.data.sources`` and ``runtime.data.encoding`` for this process."""
    import runtime.data

    sources, encoding = fake_modules()
    sys.modules["runtime.data.sources"] = sources
    sys.modules["runtime.data.encoding"] = encoding
    runtime.data.sources = sources  # type: ignore[attr-defined]
    runtime.data.encoding = encoding  # type: ignore[attr-defined]


def patch_in(monkeypatch: Any) -> None:
    """``install`` for one test: the fake modules through pytest's ``monkeypatch`` (undone after it)."""
    import runtime.data

    sources, encoding = fake_modules()
    monkeypatch.setitem(sys.modules, "runtime.data.sources", sources)
    monkeypatch.setitem(sys.modules, "runtime.data.encoding", encoding)
    monkeypatch.setattr(runtime.data, "sources", sources, raising=False)  # the package's name, looked up at each use
    monkeypatch.setattr(runtime.data, "encoding", encoding, raising=False)
