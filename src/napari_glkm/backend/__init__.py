"""Qt-free computation: forward models, networks, priors, the solver. Never imports napari/Qt."""
