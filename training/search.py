"""Searchers plugged into the training loop (DGS, TPS, HNS) and the genotype write-back."""

from __future__ import annotations


def make_searchers(cfg, model, genotype) -> list:
    out = []
    return out


def write_back(genotype, searchers, trainer=None):
    for s in searchers:
        genotype = s.write_back(genotype)
    return genotype
