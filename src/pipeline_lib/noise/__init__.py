"""Noise targets of the forget set: its covariance (identity, diagonal, low-rank) and the samplers drawn from it."""
