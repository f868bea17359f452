"""Training of GLKM's networks (generator GAN, initializer) — plain torch, progress by callback."""
