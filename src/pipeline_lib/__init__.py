"""Machine unlearning for image-to-image generative models: the library behind every pipeline stage.

The package is built in layers; a module imports only from its own layer or the layers below it
(`tests/test_layers.py` enforces this order and the absence of import circles):

    runtime     errors, atomic writes, progress, devices and threads, distributed, numerics, downloads
    data        dataset readers, class-folder trees, streaming, splits, masks (the I2I tasks' holes)
    models      the families behind `I2IModel` (MAE, VQ-GAN/MAGE, Palette diffusion), official checkpoints
    noise       the forget set's covariance and the noise targets drawn from it
    training    the loaders that batch images and the one training loop
    methods     unlearning methods: each a loss (and, for EBU and the controllable method, a gradient hook)
    evaluation  feature extractors, FID/IS/KID/cosine scores, metric weights, the forgetting flag, t-SNE
    verify      verification checks on any `I2IModel`: probe, sweep, relearn, membership, verdict
    params      params.yaml: loading, schema and meaning checks, grids, verification settings, file paths
    report      tables, figures, summaries, spread, tuning, timings, the generated documents
    engines     the DVC writer and the Snakemake <-> DVC hand-over (record / adopt)
    stages      one thin function per pipeline stage: params in, library calls, atomic outputs
    cli         `python -m pipeline_lib <stage>`: the single entry point both engines call

Only `params` and the layers above it read the raw params dict; the libraries below take the values they use.
"""

__version__ = "0.1.0"

from .runtime.kernels import pin as _pin_cpu_kernels

_pin_cpu_kernels()  # before torch loads: the same CPU kernels on every x86-64 machine (runtime/kernels.py)

#: the layers, bottom to top (a module may import from its own layer and the ones before it)
LAYERS = ("runtime", "data", "models", "noise", "training", "methods", "evaluation", "verify", "params", "report",
          "engines", "stages", "cli")
