"""The search's drawings of its decoded genotypes (``compiler.draw``): ``decoded_epochNNN.svg`` at every
decode and ``searched.svg`` beside ``searched.yaml`` (``.dot`` text where graphviz's ``dot`` program is not
installed). A decoded genotype that cannot be drawn is said in the log; the search goes on. And
``architecture.png``: each searched network's decoded cell and layer path (``draw_architecture``)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from compiler.draw import DrawError, dot_program, write_drawing
from compiler.errors import GenotypeError
from compiler.ir import Genotype
from compiler.planner import plan

from ..checkpoint import write_bytes_atomic
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


def draw_architecture(decoded: dict, path: Path) -> None:
    """One picture per searched network: the cell's DAG (edges labelled by op) and the level path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(decoded), 2, figsize=(10, 3.2 * len(decoded)), squeeze=False)
    for row, (name, d) in enumerate(decoded.items()):
        ax = axes[row][0]
        nodes = ["c_prev_prev", "c_prev", *d["cell"]]
        pos = {"c_prev_prev": (0, 1), "c_prev": (0, 0)}
        for i, n in enumerate(d["cell"]):
            pos[n] = (1 + i, 0.5 + (0.35 if i % 2 else -0.35))
        pos["out"] = (1 + len(d["cell"]), 0.5)
        for n in d["cell"]:
            for src, op in d["cell"][n]:
                (x0, y0), (x1, y1) = pos[src], pos[n]
                ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "color": "tab:blue"})
                ax.text((x0 + x1) / 2, (y0 + y1) / 2, op, fontsize=7, ha="center", color="tab:red")
            ax.annotate("", pos["out"], pos[n], arrowprops={"arrowstyle": "->", "color": "0.6"})
        for n in [*nodes, "out"]:
            ax.text(*pos[n], n, ha="center", va="center", bbox={"boxstyle": "round", "fc": "w"})
        ax.set_title(f"{name}: cell")
        ax.axis("off")
        ax.set_xlim(-0.6, len(d["cell"]) + 1.6)
        ax.set_ylim(-0.5, 1.5)
        ax = axes[row][1]
        ax.plot(range(len(d["path"])), d["path"], "o-")
        ax.set_xticks(range(len(d["path"])))
        ax.set_yticks(range(max(d["path"]) + 1))
        ax.set_xlabel("layer")
        ax.set_ylabel("level (0 = finest)")
        ax.invert_yaxis()
        ax.set_title(f"{name}: layer path {d['path']}")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=90)
    plt.close(fig)
    write_bytes_atomic(png.getvalue(), path)
