"""Machine unlearning for image-to-image generative models: the library behind every pipeline stage."""

__version__ = "0.1.0"
