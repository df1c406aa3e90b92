"""Domain core: the decisions of the control plane, in plain Python (no Azure imports)."""
