"""Architecture search that writes genotypes (``python -m training.search``, see ``cli.py``).

- ``space.py``: search-space files (torch-free loader, the genotype parser's located errors)
- ``supernet.py``: the SpikeDHS supernet (mixed edges, trellis of levels) on the compiler's runner
- ``bilevel.py``: the first-order bi-level search loop (weights on half A, alpha/beta on half B)
- ``decode.py``: discrete cells and paths from the weights, ``to_genotype``, random baseline genotypes
- ``snasnet.py``: SNASNet's training-free search (random cells scored by the Hamming kernel)
"""
