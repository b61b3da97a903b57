"""The search's drawings of its decoded genotypes (``compiler.draw``): ``decoded_epochNNN.svg`` at every
decode and ``searched.svg`` beside ``searched.yaml`` (``.dot`` text where graphviz's ``dot`` program is not
installed). A decoded genotype that cannot be drawn is said in the log; the search goes on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from compiler.draw import DrawError, dot_program, write_drawing
from compiler.errors import GenotypeError
from compiler.ir import Genotype
from compiler.planner import plan

from .decode import to_genotype


def suffix() -> str:
    return ".svg" if dot_program() is not None else ".dot"


def draw_decoded(space, decoded: dict, stem: Path, log: Callable[[str], None]) -> Path | None:
    """Draw the genotype ``decoded`` from the supernet at ``stem`` + ``suffix()``; the path, or None."""
    return draw_genotype(to_genotype(space, decoded), stem, log)


def draw_genotype(g: Genotype, stem: Path, log: Callable[[str], None]) -> Path | None:
    """Draw ``g`` at ``stem`` + ``suffix()``; the path, or None (said in the log) if it cannot be drawn."""
    path = stem.with_name(stem.name + suffix())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_drawing(plan(g), path)
    except (DrawError, GenotypeError, OSError) as exc:
        log(f"warning: no drawing of the decoded genotype at {path}: {exc}")
        return None


def decode_drawer(space, out: Path, log: Callable[[str], None]) -> Callable[[int, dict], Path | None]:
    """The search's hook at each decode: ``decoded_epochNNN`` in the run folder ``out``."""
    return lambda epoch, decoded: draw_decoded(space, decoded, Path(out) / f"decoded_epoch{epoch:03d}", log)
