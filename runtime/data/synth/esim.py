"""ESIM event generation for one camera, with DAVIS346-like sensor effects.

Per pixel: a reference log level; an event whenever the log intensity moves a contrast threshold
away from it (ON and OFF thresholds drawn per pixel around ``contrast_threshold`` with spread
``threshold_sigma``: threshold mismatch), with times interpolated linearly within a simulation step.
Background activity (``noise_hz``: random events of either sign at random times), hot pixels (a fixed
random ``hot_pixel_fraction`` of the pixels emitting ON events at ``hot_pixel_hz``) and leak (a slow
drift of the reference, ON events). A refractory period (``refractory_us``) drops every event that
follows the pixel's previous event too closely, whatever caused either; a dropped crossing still
moves the reference.
"""

from __future__ import annotations

import numpy as np

from runtime.data.events import EVENT_DTYPE, make_events

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
        n_hot = int(round(config.hot_pixel_fraction * n))
        self.hot = rng.choice(n, n_hot, replace=False) if n_hot else np.empty(0, np.int64)
        self.hot_hz = config.hot_pixel_hz
        self.rng = rng

    def step(self, log_now: np.ndarray, t0: int, t1: int) -> np.ndarray:
        """Events of the interval (t0, t1] as the log intensity goes from the last frame to ``log_now``."""
        L = log_now.ravel()
        dt = float(t1 - t0)
        if self.leak_hz:
            self.ref -= np.float32(self.leak_hz * dt * 1e-6) * self.c_on
        parts = [self._crossings(L, t0, dt)]
        if self.noise_hz:
            count = self.rng.poisson(self.noise_hz * L.size * dt * 1e-6)
            parts.append((self.rng.integers(0, L.size, count), t0 + (1.0 - self.rng.random(count)) * dt,
                          self.rng.choice(np.array([-1, 1], dtype=np.int8), count)))
        if self.hot.size and self.hot_hz:
            k = self.rng.poisson(self.hot_hz * dt * 1e-6, self.hot.size)
            pix = np.repeat(self.hot, k)
            parts.append((pix, t0 + (1.0 - self.rng.random(pix.size)) * dt, np.ones(pix.size, np.int8)))
        self.prev = L.astype(np.float32, copy=True)
        pix_a = np.concatenate([p[0] for p in parts])
        if pix_a.size == 0:
            return np.empty(0, dtype=EVENT_DTYPE)
        t_f = np.concatenate([p[1] for p in parts])
        p_a = np.concatenate([p[2] for p in parts])
        keep = self._refractory(pix_a, t_f)
        pix_a, p_a = pix_a[keep], p_a[keep]
        t_a = np.rint(t_f[keep]).astype(np.int64)
        offset = t_a - t0
        # a stable sort by time; on 16-bit keys numpy uses a radix sort
        order = np.argsort(offset.astype(np.uint16) if dt < 65536 else offset, kind="stable")
        y, x = np.divmod(pix_a[order], self.width)
        return make_events(x, y, t_a[order], p_a[order])

    def _crossings(self, L: np.ndarray, t0: int, dt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Threshold crossings: pixel, time (float us) and polarity of each; moves the references."""
        diff = L - self.ref
        idx = np.flatnonzero((diff >= self.c_on) | (diff <= -self.c_off))  # pixels with events
        if not idx.size:
            return np.empty(0, np.int64), np.empty(0), np.empty(0, np.int8)
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
        return idx[g], t, sign[g].astype(np.int8)

    def _refractory(self, pix: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Greedy refractory filter over one step's events of every cause; updates each pixel's last
        event time. Rounds: each takes the earliest undecided event of every pixel."""
        keep = np.zeros(pix.size, dtype=bool)
        order = np.lexsort((t, pix))
        ps, ts = pix[order], t[order]
        if self.refractory <= 0:
            is_last = np.r_[ps[1:] != ps[:-1], True]
            self.last[ps[is_last]] = ts[is_last]
            keep[:] = True
            return keep
        pending = np.ones(ps.size, dtype=bool)
        kept = np.zeros(ps.size, dtype=bool)
        while pending.any():
            cand = np.flatnonzero(pending)
            first = cand[np.r_[True, ps[cand][1:] != ps[cand][:-1]]]  # earliest undecided per pixel
            ok = ts[first] >= self.last[ps[first]] + self.refractory
            kept[first[ok]] = True
            self.last[ps[first[ok]]] = ts[first[ok]]
            pending[first] = False
        keep[order] = kept
        return keep
