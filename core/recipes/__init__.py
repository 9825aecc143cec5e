"""Standardized evaluation pipelines. `tiny` runs on CPU; `math` is the paper's protocol on GPU."""
