"""Loss balancers: per-task loss weights, one call per training iteration."""
