"""Peers' tools behind patternscope's interfaces, so their reference implementations run side by side
with ours: :mod:`~patternscope.adapters.art` (IBM ART's ``UniversalPerturbation``; needs the ``peers`` extra)."""
