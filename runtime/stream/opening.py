"""Opening a stream's source: ``open_source`` (a recording for a model) and ``crop_size`` (the centre
crop that fits it to the model). Bad options are ``OptionError``s naming the field (``events``,
``calib``, ...; the command line writes them as flags)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import runtime.data.sources  # looked up at each use: tests put a fake data layer there
from runtime.contract import ModelSpec
from runtime.core.errors import RuntimeInputError, first_line
from runtime.data.events import DataError
from runtime.data.options import OptionError, RecordingOptions
from runtime.data.recording import Recording

SYNTHETIC = "synthetic source"  # how errors name the built-in synthetic stream


def _bad_source(events: str | Path | None, message: str, refs: tuple[str, ...] = ()) -> OptionError:
    """An error about the source: ``events PATH: ...`` (a file) or ``synthetic source: ...``."""
    if events is None:
        return OptionError(SYNTHETIC, message, refs=refs)
    return OptionError("events", message, value=events, refs=refs)


def open_source(
    events: str | Path | None,
    spec: ModelSpec,
    options: RecordingOptions | None = None,
    *,
    seed: int = 0,
    seconds: float | None = None,
    synth: Mapping[str, Any] | None = None,
) -> Recording:
    """Open a recording: None = the built-in synthetic stereo stream at the model's size.

    ``options`` (calibration, rectification, fB) apply to recordings read from files
    (``runtime.data.sources.open_recording``); ``synth`` (``SynthConfig`` fields, e.g.
    ``{"textures": "heldout"}``) to the built-in synthetic stream.
    """
    options = options or RecordingOptions()
    if events is not None and not Path(events).exists():
        raise _bad_source(events, "no such file or folder")
    if options.calib is not None and not Path(options.calib).is_dir():
        raise OptionError("calib", "no such folder", value=options.calib)
    kwargs: dict[str, Any] = {"seed": seed}
    if events is None:
        for name in options.file_only():
            raise OptionError(name, "applies to recordings read from files ({events})", refs=("events",))
        kwargs.update(height=spec.encoding.height, width=spec.encoding.width, **(synth or {}))
        if seconds is not None:
            kwargs["seconds"] = seconds
    else:
        if synth:
            raise OptionError(next(iter(synth)), "applies to the built-in synthetic source (no {events})",
                              refs=("events",))
        kwargs.update(calib=None if options.calib is None else str(options.calib), rectify=options.rectify,
                      fb=options.fb, rectify_rounding=options.rectify_rounding)
    try:
        return runtime.data.sources.open_recording(None if events is None else str(events), **kwargs)
    except RuntimeInputError:
        raise
    except DataError as exc:
        message = first_line(exc)
        prefix = f"{events}: "  # the data layer names the file itself: say it once
        raise _bad_source(events, message.removeprefix(prefix) if events is not None else message) from None
    except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
        msg = first_line(exc)  # the synthetic source's are about its options (SynthConfig's checks)
        raise _bad_source(events, f"cannot read it: {msg}" if events is not None else msg) from None


def crop_size(
    src_hw: tuple[int, int], dst_hw: tuple[int, int], crop: str, events: str | Path | None
) -> tuple[int, int] | None:
    """The centre crop (h, w) that fits a recording of ``src_hw`` (from ``events``) to the model's ``dst_hw``,
    or None."""
    if src_hw == dst_hw:
        return None
    (sh, sw), (dh, dw) = src_hw, dst_hw
    if crop != "center":
        raise _bad_source(events, f"the recording is {sw}x{sh} but the model expects {dw}x{dh} (snn.encoding); "
                                  f"pass {{crop}} center to take its centre {dw}x{dh}", refs=("crop",))
    if sh < dh or sw < dw:
        raise _bad_source(events, f"the recording ({sw}x{sh}) is smaller than the model's input ({dw}x{dh}); "
                                  "a centre crop cannot make it fit")
    return dh, dw
