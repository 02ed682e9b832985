"""ServiceSpec validation: bad fields fail at construction, naming the field and the value."""

from __future__ import annotations

from typing import Any

import pytest

from mockpool import ServiceConfigError, ServiceSpec


def make() -> object:
    return object()


async def make_async() -> object:
    return object()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"name": ""}, r"^name='' must be a non-empty string$", id="empty-name"),
        pytest.param({"max_size": 0}, r"^service 'svc': max_size=0 must be >= 1$", id="max-zero"),
        pytest.param({"min_size": -1}, r"min_size=-1 must be a whole number >= 0", id="min-negative"),
        pytest.param({"max_size": 2.5}, r"max_size=2.5 must be a whole number", id="max-float"),
        pytest.param(
            {"min_size": 5, "max_size": 2}, r"min_size=5 must be <= max_size \(2\)", id="min-above-max"
        ),
        pytest.param({"depends_on": "redis"}, r"write depends_on=\('redis',\)", id="deps-string"),
        pytest.param({"depends_on": ("a", "a")}, r"names a service twice", id="deps-twice"),
        pytest.param({"snapshot": lambda i: i}, r"snapshot=.* needs restore= too", id="snapshot-alone"),
        pytest.param({"reset": 3}, r"reset=3 must be a callable", id="reset-not-callable"),
        pytest.param(
            {"reset_timeout": 0}, r"reset_timeout=0 must be a number of seconds > 0", id="timeout-0"
        ),
        pytest.param(
            {"acquire_timeout": float("nan")}, r"acquire_timeout=nan must be a number", id="timeout-nan"
        ),
        pytest.param({"variants": {"lean": 1}}, r"variants\['lean'\]=1 must be a callable", id="variant"),
    ],
)
def test_bad_fields_are_named(kwargs: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"name": "svc", "factory": make, **kwargs}
    with pytest.raises(ServiceConfigError, match=message) as caught:
        ServiceSpec(**fields)
    assert isinstance(caught.value, ValueError)


def test_coroutine_object_as_factory_shows_the_fix() -> None:
    with pytest.raises(ServiceConfigError) as caught:
        ServiceSpec(name="redis", factory=make_async())  # type: ignore[arg-type]
    assert str(caught.value).startswith("service 'redis': factory=<coroutine object")
    assert "pass the function itself: factory=make_redis, not factory=make_redis()" in str(caught.value)
    assert caught.value.field == "factory"


def test_a_good_spec_keeps_its_values() -> None:
    spec = ServiceSpec(name="svc", factory=make_async, depends_on=["a", "b"], variants={"lean": make})  # type: ignore[arg-type]
    assert spec.depends_on == ("a", "b")
    assert spec.is_group
    assert dict(spec.variants) == {"lean": make}
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]
