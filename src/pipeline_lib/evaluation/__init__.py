"""Evaluation: feature extractors, FID/IS/KID/cosine scores, metric weights, the forgetting flag and t-SNE maps."""
