"""Image priors: modules whose ``forward()`` returns the current sharp image ``(1, C, H, W)``."""
