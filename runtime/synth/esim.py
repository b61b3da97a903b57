"""ESIM event generation for one camera (per-pixel reference levels, thresholds, refractory period,
noise)."""

from __future__ import annotations

import numpy as np

from runtime.events import EVENT_DTYPE, make_events

from .config import SynthConfig


class _Esim:
    """ESIM event generation for one camera: per-pixel reference levels and thresholds."""

    def __init__(self, config: SynthConfig, log0: np.ndarray, rng: np.random.Generator) -> None:
        n = log0.size
        c, s = config.contrast_threshold, config.threshold_sigma
        floor = max(0.01, 0.1 * c)
        self.c_on = np.maximum(rng.normal(c, s, n), floor).astype(np.float32)  # [H*W]
        self.c_off = np.maximum(rng.normal(c, s, n), floor).astype(np.float32)
        self.ref = log0.ravel().astype(np.float32)  # [H*W]
        self.prev = self.ref.copy()
        self.last = np.full(n, -np.inf)  # time of each pixel's last event, us
        self.width = log0.shape[1]
        self.refractory = float(config.refractory_us)
        self.noise_hz, self.leak_hz = config.noise_hz, config.leak_hz
        self.rng = rng

    def step(self, log_now: np.ndarray, t0: int, t1: int) -> np.ndarray:
        """Events of the interval (t0, t1] as the log intensity goes from the last frame to ``log_now``."""
        L = log_now.ravel()
        dt = float(t1 - t0)
        if self.leak_hz:
            self.ref -= np.float32(self.leak_hz * dt * 1e-6) * self.c_on
        diff = L - self.ref
        pix, times, pols = [], [], []
        idx = np.flatnonzero((diff >= self.c_on) | (diff <= -self.c_off))  # pixels with events
        if idx.size:
            d = diff[idx]
            sign = np.where(d > 0, np.float32(1), np.float32(-1))
            c = np.where(d > 0, self.c_on[idx], self.c_off[idx])
            n = np.maximum(np.floor(np.abs(d) / c).astype(np.int64), 1)  # events per pixel
            ref0 = self.ref[idx]
            self.ref[idx] = ref0 + sign * n * c
            g = np.repeat(np.arange(idx.size), n)  # group (pixel) of each event
            start = np.cumsum(n) - n
            k = np.arange(g.size) - start[g] + 1  # 1..n within each pixel
            lp = self.prev[idx]
            dl = L[idx] - lp
            level = ref0[g] + sign[g] * k * c[g]  # the log level each event crosses
            dlg = dl[g]
            with np.errstate(divide="ignore", invalid="ignore"):
                frac = np.where(dlg != 0, (level - lp[g]) / dlg, 1.0)
            t = t0 + np.clip(frac, 0.0, 1.0) * dt  # float64 us
            keep = self._refractory(idx, g, k, n, c, dl, t, dt)
            pix.append(idx[g[keep]])
            times.append(t[keep])
            pols.append(sign[g[keep]].astype(np.int8))
        if self.noise_hz:
            count = self.rng.poisson(self.noise_hz * L.size * dt * 1e-6)
            pix.append(self.rng.integers(0, L.size, count))
            times.append(t0 + (1.0 - self.rng.random(count)) * dt)
            pols.append(self.rng.choice(np.array([-1, 1], dtype=np.int8), count))
        self.prev = L.astype(np.float32, copy=True)
        if not pix:
            return np.empty(0, dtype=EVENT_DTYPE)
        pix_a, p_a = np.concatenate(pix), np.concatenate(pols)
        t_a = np.rint(np.concatenate(times)).astype(np.int64)
        offset = t_a - t0
        # a stable sort by time; on 16-bit keys numpy uses a radix sort
        order = np.argsort(offset.astype(np.uint16) if dt < 65536 else offset, kind="stable")
        y, x = np.divmod(pix_a[order], self.width)
        return make_events(x, y, t_a[order], p_a[order])

    def _refractory(
        self,
        idx: np.ndarray,
        g: np.ndarray,
        k: np.ndarray,
        n: np.ndarray,
        c: np.ndarray,
        dl: np.ndarray,
        t: np.ndarray,
        dt: float,
    ) -> np.ndarray:
        """Greedy refractory filter for evenly spaced crossings; updates each pixel's last event time."""
        if self.refractory <= 0:
            keep = np.ones(g.size, dtype=bool)
        else:
            ok = t >= (self.last[idx] + self.refractory)[g]
            k0 = n - np.bincount(g, weights=ok, minlength=idx.size).astype(np.int64) + 1  # first allowed k
            with np.errstate(divide="ignore"):
                spacing = np.where(dl != 0, dt * c / np.abs(dl), 0.0)  # us between crossings
            step = np.where(spacing > 0, np.ceil(self.refractory / np.maximum(spacing, 1e-9)), n + 1)
            step = np.maximum(step, 1).astype(np.int64)
            keep = ok & ((k - k0[g]) % step[g] == 0)
        kept_g = g[keep]
        if kept_g.size:
            last_of_group = np.r_[kept_g[1:] != kept_g[:-1], True]
            self.last[idx[kept_g[last_of_group]]] = t[keep][last_of_group]
        return keep
