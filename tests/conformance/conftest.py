def pytest_configure(config):
    config.addinivalue_line(
        "markers", "conformance: builds the official runtime interface clients from their registries "
        "(deselect with -m 'not conformance')")
