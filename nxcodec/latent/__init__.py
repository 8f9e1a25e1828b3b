"""Latent-grid formats (versions 3 to 11): integer latents on pyramids of grids, for images, audio and shapes.

The decode path lives here and needs numpy only: ``context`` (the fixed-point context
model and the expert manager), ``tables`` and ``rans`` (entropy coding), ``synthesis``
(upsampling, experts, refinement) and ``stream`` (the container of SPEC.md section 9).
The encoder (``nxcodec.fit.latent``) trains in torch and calls the same modules to code.
"""
