"""Format version 3: images as integer latents on a pyramid of grids.

The decode path lives here and needs numpy only: ``context`` (the fixed-point context
model and the expert manager), ``tables`` and ``rans`` (entropy coding), ``synthesis``
(upsampling, experts, refinement) and ``stream`` (the container of SPEC.md section 9).
The encoder (``nxcodec.fit.latent``) trains in torch and calls the same modules to code.
"""
