"""Detection heads (dense one-stage heads, RPN, RoI box head)."""
