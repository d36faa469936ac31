"""Adapter mathematics: what a module's tensors do to the base weight.

:mod:`lorahub.adapters.delta` is the one place where ΔW is computed (docs/concepts/architecture.md, decision 1);
inspect, verify, convert and merge all call it, so a formula is fixed in one place and checked by one set of tests.
"""
