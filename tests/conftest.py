"""Fixtures for more than one test module."""
import pytest


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """An artifact folder of the session: models exported once, copied into campaigns' artifact
    folders by :func:`tests.campaign_helpers.exported_models`."""
    return tmp_path_factory.mktemp("model-cache")
