"""Deterministic seeds derived from several integers (seed, step, rank, batch ...)."""

from __future__ import annotations


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across runs, processes and platforms."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9
        value &= 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF
