"""Fixtures for more than one test module."""
import os

import pytest

from harness.remote.connect import KNOWN_HOSTS_ENV


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """An artifact folder of the session: models exported once, copied into campaigns' artifact
    folders by :func:`tests.campaign_helpers.exported_models`."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(autouse=True)
def _known_hosts_env_of_the_test_alone():
    """`hwl ... --known-hosts FILE` run in the test's process (harness.cli.main) sets HWL_KNOWN_HOSTS for the rest
    of the process, as it must for a command's Ray workers. Put back after each test: a test that left it set made
    every later test of its xdist worker check host keys against that test's file."""
    before = os.environ.get(KNOWN_HOSTS_ENV)
    yield
    if before is None:
        os.environ.pop(KNOWN_HOSTS_ENV, None)
    else:
        os.environ[KNOWN_HOSTS_ENV] = before
