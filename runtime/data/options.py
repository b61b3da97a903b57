"""How a recording is read, declared once: ``RecordingOptions`` (calibration, rectification and its
rounding, fB, ground-truth protocol, DSEC split, crop), the command-line options that set it
(``add_recording_arguments``, ``recording_options``) and ``OptionError``, the error that names a field and
that a command line prints with its flag (``OptionError.render``, ``FLAGS``).

``python -m runtime.stream``, ``python -m runtime.serve``, ``python -m training.train`` and
``python -m training.search`` add these options with ``add_recording_arguments``; the Python API
(``runtime.stream.Stream``, ``training.data.stereo_data``) takes the dataclass. Windows and burn-in are
not in it: a stream's windows come from its model (``snn.encoding``), a training sample's from
``training.config.TrainConfig`` (``windows``, ``burn_in``), and the two burn-ins mean different things.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from runtime.core.errors import RuntimeInputError
from runtime.data.protocol import GT_PROTOCOLS
from runtime.data.recording import RECTIFY_ROUNDINGS

DSEC_SPLITS = ("last20", "se-cff")  # DSEC held-out sequences (training.dsec_data): the last 20 %, SE-CFF's list
CROPS = ("none", "center")  # a recording larger than the model: an error, or its centre

# Refuse a recording when its rectification maps move more than this share of the event rows read out of the
# image (``outside_after_rectify``): a sound map loses the few per cent its lens distortion pushes past the
# image's edges (the maps of MVSEC and DSEC), a broken one (shifted, swapped, half NaN) a large part of them.
# Not under --max-dropped (1 %), which is for broken rows: a sound map would be refused by it
# (docs/reliability.md, "Rectification losses").
DEFAULT_MAX_OUTSIDE_RECTIFY = 0.2

FIELDS = ("calib", "rectify", "rectify_rounding", "fb", "gt_protocol", "dsec_split", "crop", "max_outside_rectify")
# field -> command-line flag; ``dest`` of the flag where it is not the field's name
FLAGS = {"calib": "--calib", "rectify": "--no-rectify", "rectify_rounding": "--rectify-rounding", "fb": "--fb",
         "gt_protocol": "--gt", "dsec_split": "--dsec-split", "crop": "--crop",
         "max_outside_rectify": "--max-outside-rectify"}
DESTS = {"gt_protocol": "gt"}


class OptionError(RuntimeInputError):
    """A bad option, named by its field (``gt_protocol: 'x' is not one of ...``), or by what it is about
    (``value``: the field's value, written after its name). ``what`` may name the fields in ``refs`` as
    ``{field}``; ``render(names)`` writes the message with a command line's flags (field -> flag) instead."""

    def __init__(self, field: str, what: str, value: object = None, refs: tuple[str, ...] = ()) -> None:
        self.field, self.template, self.value, self.refs = field, what, value, refs
        super().__init__(*self._parts({}))

    def _parts(self, names: Mapping[str, str]) -> tuple[str, str]:
        name = names.get(self.field, self.field)
        where = name if self.value is None else f"{name} {self.value}"
        what = self.template
        for ref in self.refs:
            what = what.replace("{" + ref + "}", names.get(ref, ref))
        return where, what

    def render(self, names: Mapping[str, str]) -> str:
        """``where: what`` with the fields in ``names`` (field -> flag) written as flags."""
        return ": ".join(self._parts(names))


@dataclass(frozen=True)
class RecordingOptions:
    """How MVSEC, DSEC and our own recordings are read (``runtime.data.sources.open_recording``,
    ``runtime.data.protocol``, ``training.dsec_data``); the defaults are every command line's."""

    calib: str | None = None  # calibration folder: MVSEC's maps, DSEC's rectify_map.h5 / cam_to_cam.yaml
    rectify: bool = True  # False: events as stored (raw real events are otherwise refused without maps)
    fb: float | None = None  # focal length x baseline override, px*m
    gt_protocol: str = "full"  # GT_PROTOCOLS (docs/data.md)
    dsec_split: str = "last20"  # DSEC_SPLITS (training: held-out sequences)
    rectify_rounding: str = "round"  # RECTIFY_ROUNDINGS
    crop: str = "none"  # CROPS (streaming: a recording larger than the model)
    max_outside_rectify: float = DEFAULT_MAX_OUTSIDE_RECTIFY  # refuse above this share lost to the maps

    def check(self) -> RecordingOptions:
        """Itself, or an ``OptionError`` naming the first bad field."""
        for name, value, choices in (("gt_protocol", self.gt_protocol, GT_PROTOCOLS),
                                     ("rectify_rounding", self.rectify_rounding, RECTIFY_ROUNDINGS),
                                     ("dsec_split", self.dsec_split, DSEC_SPLITS), ("crop", self.crop, CROPS)):
            if value not in choices:
                raise OptionError(name, f"{value!r} is not one of {', '.join(choices)}")
        if self.fb is not None and not (math.isfinite(self.fb) and self.fb > 0):
            raise OptionError("fb", f"must be a positive number of px*m, got {self.fb}")
        if not 0 <= self.max_outside_rectify <= 1:  # NaN fails too
            raise OptionError("max_outside_rectify", f"must be a fraction from 0 to 1, got {self.max_outside_rectify}")
        return self

    def rectify_loss(self, stats: Mapping[str, int], rows_checked: int | None) -> str | None:
        """Why a recording is refused for what its rectification maps moved out of the image, or None."""
        return rectify_loss_problem(stats, rows_checked, self.max_outside_rectify)

    def file_only(self) -> list[str]:
        """The fields set away from their defaults that apply to recordings read from files only."""
        d = RecordingOptions()
        return [n for n in ("calib", "fb", "rectify", "rectify_rounding", "max_outside_rectify")
                if getattr(self, n) != getattr(d, n)]

    def describe(self) -> str:
        """One line for a training log: rectification, fB, ground truth."""
        floor = " (floor)" if self.rectify_rounding == "floor" else ""
        parts = [f"rectification {'from ' + self.calib if self.calib else 'as found'}{floor}" if self.rectify
                 else "no rectification (--no-rectify)"]
        if self.fb is not None:
            parts.append(f"fB {self.fb:g} px*m (--fb)")
        parts.append(f"ground truth {self.gt_protocol}")
        return ", ".join(parts)


def rectify_loss_problem(stats: Mapping[str, int], rows_checked: int | None, limit: float) -> str | None:
    """One line when the rectification maps moved more than ``limit`` of the ``rows_checked`` event rows
    out of the image (``stats["outside_after_rectify"]``), else None."""
    outside = int(stats.get("outside_after_rectify", 0) or 0)
    if not rows_checked or not outside or outside / rows_checked <= limit:
        return None
    return (f"the rectification maps moved {outside / rows_checked:.1%} of the {rows_checked:,} event rows read out "
            f"of the image ({outside:,} outside_after_rectify), more than --max-outside-rectify {limit:g}: check "
            "the calibration maps (--calib) or accept the loss with a higher --max-outside-rectify")


_D = RecordingOptions()
_LIMIT_HELP = ("refuse a recording when its rectification maps move more than this share of the event rows out of "
               f"the image (default {DEFAULT_MAX_OUTSIDE_RECTIFY:g}: sound maps lose a few %% at the image's "
               "edges, a broken map far more; not part of --max-dropped)")
# each command's help text per field (their wording predates this module and is kept as it was)
_AS_STREAM = "(as runtime.stream {})"
HELP = {
    "stream": {
        "calib": "calibration of a real recording: MVSEC: the folder of <family>_{left,right}_{x,y}_map.txt "
        "(unzipped <family>_calib.zip; default: looked for beside the data file); DSEC: a folder with "
        "{left,right}/rectify_map.h5 and/or cam_to_cam.yaml (default: the sequence folder)",
        "rectify": "use the events as stored (real raw events are otherwise refused without rectification maps)",
        "rectify_rounding": "rectified coordinates go to the nearest pixel (round, default, as DDES) or the one "
        "below (floor, as SE-CFF and StereoSpike); docs/data.md",
        "fb": "focal length x baseline in px*m (default: the file's, MVSEC's per family, DSEC's cam_to_cam.yaml)",
        "gt_protocol": "ground-truth protocol: full (every valid pixel, exact disparity; default), ddes-full "
        "(rounded to 1/7 px, >= 36.4 px dropped, as DDES) or ddes (also only pixels of the last 15000 left "
        "events, DDES's default); docs/data.md",
        "crop": "take the centre of a recording larger than the model's input (default: a size mismatch is an error)",
        "max_outside_rectify": _LIMIT_HELP,
    },
    "serve": {
        "crop": "centre-crop larger recordings",
        "calib": "calibration of real recordings " + _AS_STREAM.format("--calib"),
        "rectify": "use real events as stored " + _AS_STREAM.format("--no-rectify"),
        "rectify_rounding": "rectified coordinates to the nearest pixel or the one below (as runtime.stream)",
        "fb": "focal length x baseline in px*m (as runtime.stream)",
        "gt_protocol": "ground-truth protocol (as runtime.stream)",
        "max_outside_rectify": "refuse a stream whose rectification maps move more than this share of its event "
        f"rows out of the image (default {DEFAULT_MAX_OUTSIDE_RECTIFY:g}; as runtime.stream; the others are scored "
        "alone)",
    },
    "train": {
        "calib": "MVSEC: the folder of indoor_flying_{left,right}_{x,y}_map.txt (default: looked for under --data); "
        "DSEC sequences hold their own rectify_map.h5",
        "rectify": "use real events as stored (raw events are otherwise refused without rectification maps)",
        "rectify_rounding": "rectified event coordinates to the nearest pixel (round, default, as DDES) or the one "
        "below (floor, as SE-CFF)",
        "fb": "focal length x baseline override, px*m (default: MVSEC's per family, DSEC's "
        "calibration/cam_to_cam.yaml)",
        "gt_protocol": "ground-truth protocol of MVSEC/DSEC: full (default), ddes-full (1/7 px, >= 36.4 px dropped) "
        "or ddes (also the 15000-event mask); docs/data.md",
        "dsec_split": "DSEC held-out sequences: last20 (default: the last 20%% by name) or se-cff (SE-CFF's fixed "
        "validation list, all of it required)",
        "max_outside_rectify": _LIMIT_HELP,
    },
    "search": {
        "calib": "stereo MVSEC: the folder of the rectification maps",
        "rectify": "stereo: use real events as stored",
        "rectify_rounding": "stereo: rectified coordinates to the nearest pixel (default) or the one below",
        "fb": "stereo: focal length x baseline override, px*m",
        "gt_protocol": "stereo: ground-truth protocol",
        "dsec_split": "stereo DSEC: held-out sequences",
        "max_outside_rectify": "stereo real data: " + _LIMIT_HELP,
    },
}
# the command lines whose options default to None: a training run tells given from default (resume checks)
_UNSET = ("train", "search")
_CHOICES = {"rectify_rounding": RECTIFY_ROUNDINGS, "gt_protocol": GT_PROTOCOLS, "dsec_split": DSEC_SPLITS,
            "crop": CROPS}


def add_recording_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup, command: str,
                            fields: Iterable[str] | None = None) -> None:
    """Add the options of ``fields`` (default: every field ``command`` has, in ``FIELDS`` order) to ``p``,
    with ``command``'s help texts (``HELP``); their ``dest`` is the field's name but ``gt`` for --gt."""
    texts = HELP[command]
    unset = command in _UNSET
    for name in (fields if fields is not None else [f for f in FIELDS if f in texts]):
        kwargs: dict = {"help": texts[name], "dest": DESTS.get(name, name)}
        if name == "rectify":
            kwargs.update(action="store_false", default=None if unset else True)
        elif name in _CHOICES:
            kwargs.update(choices=_CHOICES[name], default=None if unset else getattr(_D, name))
        elif name == "max_outside_rectify":
            kwargs.update(type=float, metavar="FRACTION", default=None if unset else _D.max_outside_rectify)
        else:
            kwargs.update(type=float if name == "fb" else str, metavar="PX_M" if name == "fb" else "DIR")
        p.add_argument(FLAGS[name], **kwargs)


def _fields(command: str | None) -> list[str]:
    return list(FIELDS) if command is None else [f for f in FIELDS if f in HELP[command]]


def recording_options(args: argparse.Namespace | Mapping[str, object], command: str | None = None) -> RecordingOptions:
    """The options parsed by ``add_recording_arguments`` (or a mapping of its ``dest`` names, such as a
    training configuration's), only ``command``'s fields when it is given (a training configuration's
    ``crop`` is its own); absent and None values take the defaults, --no-rectify is ``rectify=False``."""
    given = vars(args) if isinstance(args, argparse.Namespace) else args
    values = {name: given.get(DESTS.get(name, name)) for name in _fields(command)}
    values["rectify"] = values["rectify"] is not False
    return RecordingOptions(**{k: v for k, v in values.items() if v is not None})


def given(args: argparse.Namespace, command: str | None = None) -> bool:
    """Whether any recording option (of ``command``) was given, on a command line whose options default to None."""
    return any(getattr(args, DESTS.get(n, n), None) is not None for n in _fields(command))
