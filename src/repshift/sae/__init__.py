"""Sparse autoencoders: loading through sae-lens, encoding (fused or two-step), codes, transfer and shift metrics,
spliced loss, class features."""
