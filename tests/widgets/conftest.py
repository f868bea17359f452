"""Widget tests: each test gets its own settings folder (the weights panel remembers choices)."""

import pytest


@pytest.fixture(autouse=True)
def _config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_GLKM_CONFIG_DIR", str(tmp_path / "config"))


@pytest.fixture
def notifications():
    """The napari notifications raised during the test."""
    from napari.utils.notifications import notification_manager

    seen: list = []
    notification_manager.notification_ready.connect(seen.append)
    yield seen
    notification_manager.notification_ready.disconnect(seen.append)
