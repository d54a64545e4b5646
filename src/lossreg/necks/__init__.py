"""Necks (feature pyramids) between backbone and heads."""
