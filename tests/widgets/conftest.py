"""Widget tests: each test gets its own settings folder (the weights panel remembers choices)."""

import pytest


@pytest.fixture(autouse=True)
def _config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_GLKM_CONFIG_DIR", str(tmp_path / "config"))
