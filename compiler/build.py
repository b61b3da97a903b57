"""``python -m compiler.build GENOTYPE|MODEL.nir [-o OUT.onnx] [--weights CKPT] [--set KEY=VALUE ...] [--check]``

Validates a genotype (or reads a NIR graph, ``compiler.nir_import``), prints a summary table (layers, output
shapes, parameters, state bytes, dense MACs) and, unless ``--check``, builds the torch model, loads weights if
given, folds BatchNorm and writes the one-step ONNX graph (and, on request, a NIR graph with ``--nir`` and a
Triton model repository with ``--triton``). Bad input: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from runtime.core.errors import ArgumentParser, first_line, run_main

from .errors import GenotypeError, out_of_memory, unreadable_checkpoint
from .genotype import load_genotype
from .ir import Genotype
from .planner import plan
from .plantypes import Plan


class BuildError(Exception):
    """A user-facing failure of the build (bad checkpoint, unwritable output)."""


def _fmt(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def summary(p: Plan) -> str:
    """A table of the network: one row per layer of every network (first instance for shared ones), its
    costs summed over the layer's nodes of the lowered graph."""
    g = p.genotype
    rows = [("layer", "output shape", "params", "state B/step", "dense MACs", "MACs")]
    state_bytes = {name: 4 * math.prod(shape) for name, shape in p.states}
    for net_name, np_ in p.nets.items():
        for lp in np_.layers:
            prefix = lp.name
            params, macs, dm = p.layer_cost(prefix)
            sb = sum(v for k, v in state_bytes.items() if k.startswith(prefix + "."))
            rows.append((f"{net_name}.{lp.layer.name}", "x".join(map(str, lp.out_shape)), f"{params:,}",
                         _fmt(sb), _fmt(dm), _fmt(macs)))
    if not p.nets:  # an imported NIR graph: a row per node with weights or state
        for n in p.graph:
            if n.params or (n.state and n.kind not in ("delay_read", "delay_write")):
                sb = sum(4 * math.prod(shape) for _, shape in n.state)
                rows.append((n.name, "x".join(map(str, n.shape)), f"{n.params:,}", _fmt(sb), _fmt(n.dense_macs),
                             _fmt(n.macs)))
    elif any(n.layer == "head" for n in p.graph):  # a head with layers of its own (SNASNet's vectorize block)
        params, macs, dm = p.layer_cost("head")
        sb = sum(v for k, v in state_bytes.items() if k.startswith("head."))
        out = p.graph[-1].shape if g.task == "classification" else ()
        rows.append(("head", "x".join(map(str, out)), f"{params:,}", _fmt(sb), _fmt(dm), _fmt(macs)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    total_state = sum(state_bytes.values())
    total_macs = sum(n.macs for n in p.graph)  # every instance: the stereo feature network runs twice
    lines.append("-" * len(lines[0]))
    ref = g.meta.get("paper_params") if isinstance(g.meta, dict) else None
    params = f"parameters: {p.params:,}"
    if ref:
        params += f"  (paper: {float(ref) / 1e6:.2f}M; README 'Parameter counts' explains the difference)"
    if p.aux_params:
        params += f"  + {p.aux_params:,} in the training-only auxiliary head"
    lines.append(params)
    lines.append(f"spiking layers: {len(p.spiking_layers)}, neurons per sample: "
                 f"{sum(n.size for n in p.spiking_layers):,}")
    lines.append(f"state per sample: {len(p.states)} tensors, {_fmt(total_state)}B; "
                 f"MACs per step if dense: {_fmt(total_macs)}; dense (non-spike input) MACs: "
                 f"{_fmt(sum(n.dense_macs for n in p.graph))}")
    return "\n".join(lines)


def _node_function_buffers(model) -> set[str]:
    """The buffers (tau, b) of the nodes' spiking functions under ``mixing: spike``: a checkpoint trained
    before issue 19 (the plain sum, ``spike_sum``) has none, and they are the genotype's values, not
    trained ones, so such a checkpoint loads with the genotype's (docs/training.md)."""
    if model.genotype.mixing != "spike":
        return set()
    return {".".join((*n.module, leaf)) for n in model.plan.graph for leaf in ("tau", "b")
            if n.kind == "neuron" and n.attrs["site"].node is not None and n.attrs["site"].edge is None}


def load_weights(model, path: str) -> None:
    """Load a checkpoint (a state_dict, or a training checkpoint with a 'model' entry) into ``model``.

    Every tensor of the model must be there, as a tensor of its shape, of its kind (floating point or
    integer) and, if floating point, finite; nothing else may be there. Raises ``BuildError``."""
    import torch

    if os.path.isdir(path):
        raise BuildError(f"{path}: is a folder, not a checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BuildError(f"{path}: no such checkpoint file") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for unreadable files
        raise BuildError(f"{path}: {unreadable_checkpoint(path, exc)}") from None
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise BuildError(f"{path}: expected a state_dict or a checkpoint with a 'model' entry")
    mismatch = f"{path}: checkpoint does not match the genotype"
    own = model.state_dict()
    state = {**{k: v for k, v in own.items() if k in _node_function_buffers(model) and k not in state}, **state}
    for key, tensor in own.items():
        if key not in state:
            raise BuildError(f"{mismatch}: missing tensor {key!r}")
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise BuildError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != tuple(tensor.shape):
            raise BuildError(f"{mismatch}: tensor {key!r} has shape {tuple(value.shape)}, the model "
                             f"{tuple(tensor.shape)}")
        if value.is_floating_point() != tensor.is_floating_point() or value.is_complex():
            raise BuildError(f"{mismatch}: tensor {key!r} is {value.dtype}, the model's is {tensor.dtype}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise BuildError(f"{path}: tensor {key!r} holds {bad} non-finite values (NaN or inf)")
    extra = [k for k in state if k not in own]
    if extra:
        raise BuildError(f"{mismatch}: unexpected tensor {extra[0]!r}")
    model.load_state_dict(state)


def _make_model(source: Plan):
    """The torch model of a plan (a genotype's, or an imported NIR graph's)."""
    from .model import build_model
    from .nir_import import NIRModel, is_imported

    try:
        return (NIRModel(source) if is_imported(source) else build_model(source)).eval()
    except (MemoryError, RuntimeError) as exc:
        if not out_of_memory(exc):
            raise
        g = source.genotype
        raise BuildError(f"{g.file or g.name}: this machine cannot allocate the model "
                         f"({first_line(exc)}); reduce its size (input, channels, disparities)") from None


def build(genotype: Genotype | Plan, out: Path | None, weights: str | None = None, fold: bool = True, *,
          factorize: bool = True, int8: bool = False, calib_windows: int = 16, calib_events: str | None = None,
          pad_channels: bool = True, nir_out: Path | None = None, triton_dir: Path | None = None,
          triton_name: str = "model", triton_max_batch: int = 8, triton_version: int = 1,
          overwrite: bool = False) -> list[Path]:
    """Write the requested outputs (ONNX at ``out``, NIR, Triton repository) of a genotype or of a plan (an
    imported NIR graph's); returns what was written. The ONNX graph (factorised, int8 as asked) and the NIR
    graph are made before anything is written, so what NIR cannot express, or a failed calibration, writes nothing."""
    from .export import save_onnx, to_onnx

    model = _make_model(genotype if isinstance(genotype, Plan) else plan(genotype))
    if weights:
        load_weights(model, weights)
    graph = None
    if nir_out is not None:
        from .nir_export import to_nir

        graph = to_nir(model)  # NIRExportError (a GenotypeError) names the first layer NIR cannot express
    proto = None
    if out is not None or triton_dir is not None:
        try:
            proto = to_onnx(model, fold=fold, factorize=factorize)
        except (MemoryError, RuntimeError) as exc:
            if not out_of_memory(exc):
                raise
            raise BuildError(f"{out or triton_dir}: ran out of memory while exporting ({first_line(exc)})") from None
        if int8:  # calibrated on event windows, then quantised: python -m runtime.calibrate (compiler/int8.py)
            from .int8 import Int8Error, to_int8

            try:
                proto = to_int8(proto, calib_events, calib_windows, pad_channels)
            except Int8Error as exc:
                raise BuildError(str(exc)) from None

    def export(path: Path):
        save_onnx(proto, path)
        return proto

    written: list[Path] = []
    target = out
    try:
        if out is not None:
            export(out)
            written.append(out)
        if graph is not None:
            from .nir_export import write_nir

            target = nir_out
            write_nir(graph, nir_out)
            written.append(nir_out)
        if triton_dir is not None:
            target = triton_dir
            written.append(_write_triton(triton_dir, triton_name, export, triton_max_batch, triton_version, overwrite))
    except OSError as exc:
        raise BuildError(f"{target}: cannot write ({exc.strerror or exc})") from None
    return written


def _write_triton(directory: Path, name: str, export, max_batch: int, version: int, overwrite: bool) -> Path:
    """``compiler.triton.write_repository``; what it refuses is a ``BuildError``."""
    from .triton import TritonError, write_repository

    try:
        return write_repository(directory, name, export, max_batch, version=version, overwrite=overwrite)
    except TritonError as exc:
        raise BuildError(f"--triton {directory}: {exc}") from None


def _triton_arguments(parser) -> None:
    parser.add_argument("--triton", metavar="DIR", help="write a Triton model repository DIR/<genotype>/ "
                        "(config.pbtxt, 1/model.onnx); without -o no other ONNX file is written")
    parser.add_argument("--triton-max-batch", type=int, default=8, metavar="N",
                        help="max_batch_size of the Triton config: streams batched per run (default 8)")
    parser.add_argument("--triton-version", type=int, default=1, metavar="V",
                        help="the model version folder to write (default 1); other versions are kept")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a Triton config.pbtxt or version folder that this tool did not write")


def _output_arguments(parser) -> None:
    """The other outputs (NIR, Triton, drawing) and a NIR input's Euler step."""
    parser.add_argument("--nir", metavar="OUT.nir", help="write a NIR graph (classification genotypes that NIR "
                        "can express; docs/deploy.md); without -o no ONNX file is written")
    _triton_arguments(parser)
    parser.add_argument("--draw", metavar="OUT.svg", help="draw the cells and the networks' trellises (.svg, .png, "
                        ".pdf with graphviz's dot; .dot without); without -o no ONNX file is written")
    parser.add_argument("--dt", type=float, default=None, metavar="SECONDS",
                        help="a NIR graph's Euler step (default: its metadata's dt, else 1e-4 as snnTorch writes)")


def _int8_arguments(parser) -> None:
    parser.add_argument("--int8", action="store_true",
                        help="quantise the convolutions on spikes to int8 (QDQ; calibrated on event windows)")
    parser.add_argument("--calib-windows", type=int, default=None, metavar="N",
                        help="event windows to calibrate --int8 on (default 16; at most as many as fit a quarter "
                        "of the memory available)")
    parser.add_argument("--calib-events", metavar="PATH",
                        help="recording to calibrate --int8 on (default: the built-in synthetic stream)")
    parser.add_argument("--pad-channels", action=argparse.BooleanOptionalAction, default=None,
                        help="--int8: compute convs with fewer than 16 output channels with 16 for ONNX Runtime's "
                        "faster x86 kernel (default; the same outputs); --no-pad-channels on ARM")


def _check_int8_arguments(args) -> None:
    if not args.int8 and (args.calib_windows is not None or args.calib_events):
        raise BuildError("--calib-windows/--calib-events: they calibrate --int8, which is not given")
    if not args.int8 and args.pad_channels is not None:
        raise BuildError("--pad-channels/--no-pad-channels: they apply to --int8, which is not given")
    if args.calib_windows is not None and args.calib_windows < 1:
        raise BuildError(f"--calib-windows must be at least 1, got {args.calib_windows}")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m compiler.build", description=__doc__.split("\n\n")[1])
    parser.add_argument("genotype", help="genotype YAML file, e.g. genotypes/stereo.yaml, or a NIR graph (.nir)")
    parser.add_argument("-o", "--output", help="ONNX file to write (default: build/<genotype name>.onnx)")
    parser.add_argument("--weights", help="checkpoint to export (state_dict or training checkpoint)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a genotype value, e.g. --set input.height=132 (repeatable)")
    parser.add_argument("--check", action="store_true", help="validate and print the summary only")
    parser.add_argument("--no-fold", action="store_true", help="keep BatchNorm as separate nodes")
    parser.add_argument("--quiet", action="store_true", help="do not print the summary table")
    _output_arguments(parser)
    parser.add_argument("--no-factorize", action="store_true",
                        help="build the stereo cost volume instead of factorising its first convolution")
    _int8_arguments(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        p = _load(args)
        g = p.genotype
        if not args.quiet:
            nir_meta = g.meta.get("nir") if isinstance(g.meta, dict) else None
            print(f"{g.name} (NIR graph, {nir_meta['nodes']} nodes, Euler step dt = {nir_meta['dt']:g} s)" if nir_meta
                  else f"{g.name} ({g.task}, {g.input.height}x{g.input.width}, mixing at the {g.mixing})")
            print(summary(p))
        if args.draw:
            _draw(p, args.draw)
        if args.check:
            print(f"{args.genotype}: valid")
            return 0
        if args.triton_max_batch < 1:
            raise BuildError(f"--triton-max-batch: must be at least 1, got {args.triton_max_batch}")
        out = Path(args.output) if args.output else Path("build") / f"{Path(args.genotype).stem}.onnx"
        _check_int8_arguments(args)
        if not args.output and (args.nir or args.triton or args.draw):
            out = None
            if not (args.nir or args.triton):
                return 0
        written = build(p, out, args.weights, fold=not args.no_fold, factorize=not args.no_factorize,
                        int8=args.int8, calib_windows=16 if args.calib_windows is None else args.calib_windows,
                        calib_events=args.calib_events, pad_channels=args.pad_channels is not False,
                        nir_out=Path(args.nir) if args.nir else None,
                        triton_dir=Path(args.triton) if args.triton else None,
                        triton_name=Path(args.genotype).stem, triton_max_batch=args.triton_max_batch,
                        triton_version=args.triton_version, overwrite=args.overwrite)
        for path in written:
            triton = args.triton and path.parent == Path(args.triton)
            print(f"wrote {path}" + (f" (Triton model version {args.triton_version}: {path / str(args.triton_version)}"
                                     "/model.onnx and config.pbtxt; other versions kept)" if triton else ""))
        return 0

    return run_main(body, (GenotypeError, BuildError))


def _draw(p: Plan, path: str) -> None:
    from .draw import DrawError, write_drawing
    from .nir_import import is_imported

    if is_imported(p):
        raise BuildError(f"--draw {path}: draws genotypes (cells and trellises); an imported NIR graph has none")
    try:
        print(f"wrote {write_drawing(p, path)}")
    except DrawError as exc:
        raise BuildError(str(exc)) from None


def _load(args) -> Plan:
    """The plan of the genotype, or of the NIR graph, the command line names."""
    from .nir_import import is_nir_file, load_nir

    if not is_nir_file(args.genotype):
        if args.dt is not None:
            raise BuildError("--dt: it is the Euler step of a NIR graph; a genotype's neurons are discrete already")
        return plan(load_genotype(args.genotype, overrides=args.overrides))
    for flag, given in (("--set", args.overrides), ("--weights", args.weights), ("--nir", args.nir)):
        if given:
            raise BuildError(f"{flag}: a NIR graph carries its own weights and is NIR already; {flag} applies to "
                             "genotypes")
    return load_nir(args.genotype, args.dt)


if __name__ == "__main__":
    sys.exit(main())
