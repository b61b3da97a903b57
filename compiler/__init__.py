"""Compile YAML genotypes of searched spiking networks into PyTorch models and stateful ONNX graphs.

Parsing and validation (``load_genotype``) need no torch; the torch names load on first use.
"""

from .errors import GenotypeError
from .genotype import load_genotype, loads_genotype, parse_genotype
from .ir import Genotype

__all__ = ["GenotypeError", "Genotype", "load_genotype", "loads_genotype", "parse_genotype",
           "build_model", "export_onnx", "export_nir", "fold_batchnorm", "plan"]


def __getattr__(name: str):
    if name == "build_model":
        from .model import build_model
        return build_model
    if name == "export_onnx":
        from .export import export_onnx
        return export_onnx
    if name == "export_nir":
        from .nir_export import export_nir
        return export_nir
    if name == "fold_batchnorm":
        from .fold import fold_batchnorm
        return fold_batchnorm
    if name == "plan":
        from .planner import plan
        return plan
    raise AttributeError(f"module 'compiler' has no attribute {name!r}")
