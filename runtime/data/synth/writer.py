"""Writing a synthetic recording in the MVSEC layout (``*_data.hdf5`` and ``*_gt.hdf5``)."""

from __future__ import annotations

import errno
import os

import numpy as np

from runtime.core.atomic import atomic_path
from runtime.data.events import to_mvsec
from runtime.data.recording import SIDES

from .config import SynthConfig
from .simulate import Simulator


def write_mvsec(
    config: SynthConfig, out_dir: str | os.PathLike, name: str | None = None, *, progress: bool = False
) -> tuple[str, str]:
    """Simulate ``config`` and write ``NAME_data.hdf5`` and ``NAME_gt.hdf5`` in the MVSEC layout.

    Data file: ``davis/{left,right}/events`` float64 [N, 4] (x, y, t seconds, p -1/+1),
    ``davis/{left,right}/image_raw`` uint8 [n, H, W] and ``image_raw_ts`` float64 [n] seconds.
    Ground-truth file: ``davis/left/depth_image_rect`` float32 [m, H, W] metres (NaN invalid) and
    ``depth_image_rect_ts`` float64 [m] seconds. Both carry the config as attributes (``fb``,
    ``synth_config``). Streams to disk chunk by chunk, into temporary files in ``out_dir`` that replace
    the two files only when both are complete (``runtime.core.atomic``: the ground truth first, then the
    data); a failure leaves existing files as they were. ``name`` is a file name stem, never a path.
    Returns the two paths.
    """
    import h5py

    name = name or f"synth_seed{config.seed}"
    check_name(name)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"-o {out_dir}: is a file, not a folder")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise OSError(f"-o {out_dir}: cannot create the folder ({exc.strerror or exc})") from None
    data_path = os.path.join(out_dir, f"{name}_data.hdf5")
    gt_path = os.path.join(out_dir, f"{name}_gt.hdf5")
    with atomic_path(data_path) as data_tmp, atomic_path(gt_path) as gt_tmp:
        with h5py.File(data_tmp, "w") as fd, h5py.File(gt_tmp, "w") as fg:
            _write(config, fd, fg, progress, lambda nbytes: check_room(out_dir, nbytes))
    return data_path, gt_path


ROOM_MARGIN = 4 << 20  # bytes kept free for HDF5's own metadata and for closing the files cleanly


def check_room(folder: str | os.PathLike, nbytes: int) -> None:
    """Refuse (``OSError`` ENOSPC) to write ``nbytes`` more into ``folder`` when the disk lacks them plus
    ``ROOM_MARGIN``: HDF5 that runs out of disk mid-write crashes the process on closing its files
    (a segfault, its temporary files left behind), so the writer stops before."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return  # no statistics (some file systems): HDF5's own errors are all there is
    free = st.f_bavail * st.f_frsize
    if free < nbytes + ROOM_MARGIN:
        exc = OSError(f"{folder}: No space left on device: {free / 2**20:.1f} MB free, the next chunk needs "
                      f"{(nbytes + ROOM_MARGIN) / 2**20:.1f} MB (nothing was written)")
        exc.errno = errno.ENOSPC
        raise exc


def check_name(name: str) -> None:
    """A recording's name is a plain file name stem: no folder part, not hidden, not '.' or '..'."""
    if not name or os.path.basename(name) != name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"--name {name!r} must be a plain file name stem (no folders, not starting with '.')")


def _write(config: SynthConfig, fd, fg, progress: bool, room=lambda nbytes: None) -> None:
    """Simulate ``config`` into the open data file ``fd`` and ground-truth file ``fg`` (``room(nbytes)``
    is asked before each chunk is appended)."""
    H, W = config.height, config.width
    sim = Simulator(config)
    for fh in (fd, fg):
        fh.attrs["fb"] = config.focal_baseline
        fh.attrs["focal_px"] = config.focal
        fh.attrs["baseline_m"] = config.baseline_m
        fh.attrs["synth_config"] = config.to_json()
        fh.attrs["source"] = "runtime.synth"
    dsets = {}
    for side in SIDES:
        g = fd.create_group(f"davis/{side}")
        dsets[side, "events"] = g.create_dataset(
            "events", (0, 4), np.float64, maxshape=(None, 4), chunks=(32768, 4)
        )
        dsets[side, "image_raw"] = g.create_dataset(
            "image_raw", (0, H, W), np.uint8, maxshape=(None, H, W), chunks=(1, H, W)
        )
        dsets[side, "image_raw_ts"] = g.create_dataset(
            "image_raw_ts", (0,), np.float64, maxshape=(None,), chunks=(1024,)
        )
    gl = fg.create_group("davis/left")
    dsets["depth"] = gl.create_dataset(
        "depth_image_rect", (0, H, W), np.float32, maxshape=(None, H, W), chunks=(1, H, W)
    )
    dsets["depth_ts"] = gl.create_dataset(
        "depth_image_rect_ts", (0,), np.float64, maxshape=(None,), chunks=(1024,)
    )
    for chunk in sim.run(progress=progress):
        room(sum(chunk.events[side].size * 32 + chunk.images[side].nbytes for side in SIDES)
             + chunk.depth.nbytes + 8 * (2 * len(chunk.image_ts_us) + len(chunk.gt_ts_us)))
        for side in SIDES:
            _append(dsets[side, "events"], to_mvsec(chunk.events[side]))
            _append(dsets[side, "image_raw"], chunk.images[side])
            _append(dsets[side, "image_raw_ts"], chunk.image_ts_us / 1e6)
        _append(dsets["depth"], chunk.depth)
        _append(dsets["depth_ts"], chunk.gt_ts_us / 1e6)


def _append(dset, values: np.ndarray) -> None:
    n = dset.shape[0]
    if len(values):
        dset.resize(n + len(values), axis=0)
        dset[n:] = values
