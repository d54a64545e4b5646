"""Label assigners: anchors/points -> ground truths. Each file registers its own entries."""
