import pytest

from runtime.core.function import FunctionSpec, validate
from runtime.errors import InvalidParameterValue, RuntimeNotAvailable

RUNTIMES = {"python3.11": object()}


def spec(**kw):
    base = dict(name="fn", runtime="python3.11", handler="app.handler")
    base.update(kw)
    return FunctionSpec(**base)


def test_defaults_filled_in():
    s = validate(spec(), RUNTIMES)
    assert (s.memory_mb, s.timeout_seconds, s.ephemeral_storage_mb) == (128, 3, 512)


@pytest.mark.parametrize("kw,field", [
    ({"name": ""}, "name"), ({"name": "a" * 65}, "name"), ({"name": "a/b"}, "name"),
    ({"handler": "app"}, "handler"), ({"handler": "app.handler()"}, "handler"),
    ({"memory_mb": 127}, "memory_mb"), ({"memory_mb": 10241}, "memory_mb"),
    ({"timeout_seconds": 901}, "timeout_seconds"),
    ({"ephemeral_storage_mb": 511}, "ephemeral_storage_mb"),
    ({"environment": {"1BAD": "x"}}, "environment"), ({"environment": {"AWS_REGION": "x"}}, "environment"),
    ({"environment": {"PATH": "x"}}, "environment"), ({"environment": {"BIG": "x" * 4100}}, "environment"),
    ({"description": "d" * 257}, "description"),
])
def test_invalid_fields_named(kw, field):
    with pytest.raises(InvalidParameterValue) as err:
        validate(spec(**kw), RUNTIMES)
    assert err.value.field == field
    assert field in str(err.value)


def test_unknown_runtime_lists_available():
    with pytest.raises(RuntimeNotAvailable) as err:
        validate(spec(runtime="python2.7"), RUNTIMES)
    assert "python3.11" in str(err.value)


def test_bounds_inclusive():
    s = validate(spec(memory_mb=10240, timeout_seconds=900, ephemeral_storage_mb=10240), RUNTIMES)
    assert s.memory_mb == 10240
    s = validate(spec(memory_mb=128, timeout_seconds=1, ephemeral_storage_mb=512), RUNTIMES)
    assert s.timeout_seconds == 1
