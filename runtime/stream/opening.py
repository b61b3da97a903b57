"""Opening a stream's source: ``open_source`` (a recording for a model) and ``crop_size`` (the centre
crop that fits it to the model), moved out of ``core.py``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runtime.contract import ModelSpec
from runtime.core.errors import RuntimeInputError, first_line
from runtime.data.events import DataError


def open_source(
    events: str | Path | None,
    spec: ModelSpec,
    *,
    seed: int = 0,
    seconds: float | None = None,
    calib: str | Path | None = None,
    rectify: bool = True,
    fb: float | None = None,
    rectify_rounding: str = "round",
    synth: Mapping[str, Any] | None = None,
) -> Any:
    """Open a recording: None = the built-in synthetic stereo stream at the model's size.

    ``calib``, ``rectify``, ``rectify_rounding`` and ``fb`` apply to recordings read from files
    (``runtime.data.sources.open_recording``); ``synth`` (``SynthConfig`` fields, e.g.
    ``{"textures": "heldout"}``) to the built-in synthetic stream.
    """
    from runtime.data import sources

    where = f"--events {events}" if events is not None else "synthetic source"
    if events is not None and not Path(events).exists():
        raise RuntimeInputError(where, "no such file or folder")
    if calib is not None and not Path(calib).is_dir():
        raise RuntimeInputError(f"--calib {calib}", "no such folder")
    kwargs: dict[str, Any] = {"seed": seed}
    if events is None:
        for name, value in (("--calib", calib), ("--fb", fb), ("--no-rectify", None if rectify else True),
                            ("--rectify-rounding", None if rectify_rounding == "round" else rectify_rounding)):
            if value is not None:
                raise RuntimeInputError(name, "applies to recordings read from files (--events)")
        kwargs.update(height=spec.encoding.height, width=spec.encoding.width, **(synth or {}))
        if seconds is not None:
            kwargs["seconds"] = seconds
    else:
        if synth:  # named as its command-line option
            flag = "--" + next(iter(synth)).replace("_", "-")
            raise RuntimeInputError(flag, "applies to the built-in synthetic source (no --events)")
        kwargs.update(calib=None if calib is None else str(calib), rectify=rectify, fb=fb,
                      rectify_rounding=rectify_rounding)
    try:
        return sources.open_recording(None if events is None else str(events), **kwargs)
    except RuntimeInputError:
        raise
    except DataError as exc:
        message = first_line(exc)
        prefix = f"{events}: "  # the data layer names the file itself: say it once
        raise RuntimeInputError(where, message.removeprefix(prefix) if events is not None else message) from None
    except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
        msg = first_line(exc)  # the synthetic source's are about its options (SynthConfig's checks)
        raise RuntimeInputError(where, f"cannot read it: {msg}" if events is not None else msg) from None


def crop_size(
    src_hw: tuple[int, int], dst_hw: tuple[int, int], crop: str, where: str
) -> tuple[int, int] | None:
    """The centre crop (h, w) that fits a recording of ``src_hw`` to the model's ``dst_hw``, or None."""
    if src_hw == dst_hw:
        return None
    (sh, sw), (dh, dw) = src_hw, dst_hw
    if crop != "center":
        raise RuntimeInputError(
            where,
            f"the recording is {sw}x{sh} but the model expects {dw}x{dh} (snn.encoding); "
            f"pass --crop center to take its centre {dw}x{dh}",
        )
    if sh < dh or sw < dw:
        raise RuntimeInputError(
            where,
            f"the recording ({sw}x{sh}) is smaller than the model's input ({dw}x{dh}); "
            "a centre crop cannot make it fit",
        )
    return dh, dw
