"""Fixtures of the hostile-function corpus (tests/security).

Every test deploys an attack as a real function, invokes it through the
session agent (``agent``/``client`` from tests/conftest.py), asserts the
observable effect of the protection that stops it, and then calls
``assert_bystander_ok(client)`` (seclib.py): the innocent function deployed
here once per session must still answer with its exact result.

Importing from seclib here, during collection, also puts the canary variable into
the environment the session agent will inherit.
"""

import pytest

from seclib import BYSTANDER, BYSTANDER_CODE, PRELUDE, assert_bystander_ok, delete_function


@pytest.fixture(scope="session", autouse=True)
def bystander(client):
    """The innocent function every attack is followed by (deployed once, kept warm)."""
    client.create(BYSTANDER, {"app.py": BYSTANDER_CODE}, memory_mb=128, timeout_seconds=10)
    assert_bystander_ok(client)
    yield BYSTANDER
    delete_function(client, BYSTANDER)


@pytest.fixture
def deploy(client):
    """``deploy(name, source, files=None, **spec)`` creates a function whose
    app.py is seclib.PRELUDE + ``source`` (128 MB, 5 s unless given). Every
    function a test deployed is deleted afterwards, destroying its environments."""
    made: list[str] = []

    def create(name: str, source: str, files: dict | None = None, **spec):
        spec.setdefault("memory_mb", 128)
        spec.setdefault("timeout_seconds", 5)
        cfg = client.create(name, {"app.py": PRELUDE + source, **(files or {})}, **spec)
        made.append(name)
        return cfg

    yield create
    for name in made:
        delete_function(client, name)
