"""Evaluation: the contract's reference pipeline (`reference_pipeline`), the evaluation tables
(`evaluate`, with `measures`, `region_growing`, `tables`), the demo's sample volume (`sample`) and
parity with the official model (`parity`)."""
