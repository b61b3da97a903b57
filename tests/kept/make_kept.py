"""Write the golden files that pin the compiler's behaviour across a restructuring (issue 18, "Kept").

    python tests/kept/make_kept.py        # run on the code whose behaviour is to be kept

For every shipped genotype (at the reduced sizes of ``tests/helpers.SMALL``, with weights derived from
each tensor's name so that they do not depend on module creation order) and for the shipped trained
model at its own size: the exported ONNX graph (default passes, and variants), the NIR graph where NIR
can express the genotype, and the ``--check`` table at full size. ``tests/test_kept.py`` exports the same
models with the current code and compares them with these files: ONNX outputs and state bit-identical
over 20 steps (both graphs run in the same process, so the comparison does not depend on the CPU),
NIR graphs node for node, tables character for character.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE.parent))

from kept_cases import CASES, CHECK_GENOTYPES, NIR_CASES, build_case  # noqa: E402


def main() -> int:
    from compiler.build import main as build_main
    from compiler.export import save_onnx, to_onnx
    from compiler.nir_export import to_nir, write_nir

    for name, case in CASES.items():
        model = build_case(case)
        proto = to_onnx(model, **case.get("export", {}))
        if case.get("int8"):
            from runtime.calibrate import to_int8

            proto = to_int8(proto, None, 2)
        save_onnx(proto, HERE / f"{name}.onnx")
        print(f"wrote {name}.onnx")
    for name, case in NIR_CASES.items():
        write_nir(to_nir(build_case(case)), HERE / f"{name}.nir")
        print(f"wrote {name}.nir")
    for stem in CHECK_GENOTYPES:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            build_main([f"genotypes/{stem}.yaml", "--check"])
        (HERE / f"check_{stem}.txt").write_text(buf.getvalue())
        print(f"wrote check_{stem}.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
