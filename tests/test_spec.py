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


async def make_group(a: object, b: object) -> object:
    return (a, b)


def make_lean(a: object, b: object) -> object:
    return (a, b)


def test_a_good_spec_keeps_its_values() -> None:
    spec = ServiceSpec(name="svc", factory=make_group, depends_on=["a", "b"], variants={"lean": make_lean})  # type: ignore[arg-type]
    assert spec.depends_on == ("a", "b")
    assert spec.is_group
    assert dict(spec.variants) == {"lean": make_lean}
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"factory": make, "depends_on": ("redis", "jwt")},
            r"^service 'svc': factory=.* cannot be called as factory\(redis, jwt\) \(too many positional "
            r"arguments\); a service with depends_on=\('redis', 'jwt'\) gets one argument per member",
            id="group-factory-takes-none",
        ),
        pytest.param(
            {"factory": lambda redis: redis},
            r"cannot be called as factory\(\) \(missing a required argument: 'redis'\); a service "
            r"without depends_on calls it with no argument",
            id="factory-wants-an-argument",
        ),
        pytest.param(
            {
                "factory": lambda redis: redis,
                "depends_on": ("redis",),
                "minimal": make,
                "allow_degraded": True,
            },
            r"minimal=.* cannot be called as minimal\(redis\)",
            id="minimal-like-the-factory",
        ),
        pytest.param(
            {"variants": {"lean": lambda x: x}},
            r"variants\['lean'\]=.* cannot be called as variants\['lean'\]\(\)",
            id="variant",
        ),
        pytest.param(
            {"reset": make}, r"reset=.* cannot be called as reset\(instance\)", id="reset-no-instance"
        ),
        pytest.param(
            {"snapshot": lambda i: i, "restore": lambda i: None},
            r"restore=.* cannot be called as restore\(instance, state\) \(too many positional arguments\)",
            id="restore-one-argument",
        ),
        pytest.param({"on_release": lambda handle: None}, r"on_release\(handle, token\)", id="on-release"),
    ],
)
def test_a_hook_that_cannot_take_its_arguments_is_refused_when_the_spec_is_built(
    kwargs: dict[str, Any], message: str
) -> None:
    """Such a hook failed at every call: a factory as a RecoveryFailedError at the first acquire,
    a reset as a recovery at every release. Now it fails where it was written."""
    fields: dict[str, Any] = {"name": "svc", "factory": make, **kwargs}
    with pytest.raises(ServiceConfigError, match=message) as caught:
        ServiceSpec(**fields)
    assert caught.value.service == "svc"


def test_hooks_that_take_their_arguments_in_any_form_are_accepted() -> None:
    class Client:
        def __init__(self, redis: object, jwt: object = None) -> None:
            self.redis = redis

        def close(self) -> None:
            pass

    spec = ServiceSpec(
        name="svc",
        factory=Client,  # a class: its __init__, less self
        depends_on=("redis",),
        destroy=Client.close,  # an unbound method: the instance is self
        reset=lambda *args: None,
        health_check=len,  # a builtin: checked when it has a signature
        variants={"lean": lambda redis, **options: redis},
    )
    assert spec.factory is Client
    assert ServiceSpec(name="d", factory=dict, reset=dict.clear).reset is dict.clear
