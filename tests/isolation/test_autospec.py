"""Dirtying battery of autospec_service (issue 12): whatever a test does to the mock, its
children or the mock's own class, the next lease gets the mock as create_autospec made it."""

from __future__ import annotations

import dataclasses
from typing import Any
from unittest import mock

import pytest

from mockpool.services import autospec_service
from mockpool.testing import Dirtier, check_isolation


class Response:
    def json(self) -> dict[str, Any]:
        raise NotImplementedError


class ApiClient:
    timeout = 5.0

    def get(self, path: str) -> Response:
        raise NotImplementedError

    def post(self, path: str, body: dict[str, Any]) -> Response:
        raise NotImplementedError

    async def fetch(self, path: str) -> bytes:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        raise NotImplementedError


def _pristine(m: Any) -> None:
    assert m.mock_calls == []
    assert [m.get.mock_calls, m.post.mock_calls, m.fetch.mock_calls] == [[], [], []]
    assert m.get.call_count == 0
    assert isinstance(m.get("/x"), mock.MagicMock)  # a fresh return value, not a configured one
    with pytest.raises(TypeError):
        m.get()  # the signature is still checked
    # The check's own calls are not the next check's business. Not m.reset_mock(): it gives
    # every mock of the tree new call lists, so each reset would rebuild them all and hide a
    # reset that misses a mock.
    m.get.reset_mock()
    m.mock_calls.clear()
    m.method_calls.clear()


def _child_attribute(m: Any) -> None:
    m.get.retries = 3


def _return_chain(m: Any) -> None:
    m.get.return_value.json.return_value = {"id": 1}


def _no_chain(m: Any) -> None:
    assert m.get("/x").json() != {"id": 1}


def _side_effect_iterator(m: Any) -> None:
    m.post.side_effect = iter([RuntimeError("down"), "ok"])
    with pytest.raises(RuntimeError):
        m.post("/x", {})


def _no_side_effect(m: Any) -> None:
    assert m.post.side_effect is None
    assert isinstance(m.post("/x", {}), mock.MagicMock)


def _property_on_type(m: Any) -> None:
    type(m).base_url = mock.PropertyMock(return_value="https://evil.example")


def _no_property(m: Any) -> None:
    assert "base_url" not in vars(type(m))
    assert m.base_url != "https://evil.example"


def _configure_mock(m: Any) -> None:
    m.configure_mock(**{"get.return_value": "configured", "timeout": 1})


def _not_configured(m: Any) -> None:
    assert m.get("/x") != "configured"
    assert m.timeout != 1


def _deleted(m: Any) -> None:
    del m.post


def _post_is_back(m: Any) -> None:
    assert isinstance(m.post("/x", {}), mock.MagicMock)


def _replaced(m: Any) -> None:
    m.get = mock.MagicMock(return_value="replaced")  # loses the signature check


def _signature_checked(m: Any) -> None:
    with pytest.raises(TypeError):
        m.get()


def _attached(m: Any) -> None:
    m.attach_mock(mock.MagicMock(return_value="attached"), "extra")


def _nothing_attached(m: Any) -> None:
    assert "extra" not in m._mock_children
    with pytest.raises(AttributeError):
        _ = m.extra


def _add_spec(m: Any) -> None:
    m.mock_add_spec(["get"])


def _spec_is_back(m: Any) -> None:
    assert isinstance(m.post("/x", {}), mock.MagicMock)


def _magic(m: Any) -> None:
    m.__str__.return_value = "configured"  # MagicMock keeps magic methods on the mock's own class


def _magic_is_back(m: Any) -> None:
    assert str(m) != "configured"


def _async_configured(m: Any) -> None:
    m.fetch.return_value = b"cached"
    m.fetch.side_effect = None


async def _async_fresh(m: Any) -> None:
    assert await m.fetch("/x") != b"cached"
    assert m.fetch.await_count == 1


def _signature_attr(m: Any) -> None:
    m.get.__signature__ = None


def _called(m: Any) -> None:
    m.get("/x")
    m.post("/y", {"a": 1})


def _no_calls(m: Any) -> None:
    assert m.mock_calls == [] and m.method_calls == []
    assert m.get.call_args_list == []


def _sealed(m: Any) -> None:
    mock.seal(m)


def _not_sealed(m: Any) -> None:
    assert m.get("/x").anything_goes is not None


def _spec_state_read(m: Any) -> None:
    m.timeout.real = 1.0  # reading the attribute makes its mock; the test configures it


def _return_value_used(m: Any) -> None:
    response = m.post.return_value  # the code under test is handed the response, never calls post
    response.json()
    response.raise_for_status()


def _return_value_called(m: Any) -> None:
    m.post.return_value()


#: Patches a dirtier started and left for its test's teardown to stop (pytest-mock's
#: ``mocker.patch.object``, ``request.addfinalizer(patcher.stop)``): that teardown runs after
#: the lease has ended, so a check in the next lease plays it first.
_UNTIL_TEARDOWN: list[Any] = []


def _patched_until_teardown(m: Any) -> None:
    m.timeout.real = 9.0  # configured, then patched over
    _UNTIL_TEARDOWN.append(mock.patch.object(m, "timeout", 1.0))
    _UNTIL_TEARDOWN[-1].start()


def _property_patched_until_teardown(m: Any) -> None:
    patcher = mock.patch.object(
        type(m), "base_url", new_callable=mock.PropertyMock, return_value="https://evil.example", create=True
    )
    _UNTIL_TEARDOWN.append(patcher)
    patcher.start()


def _after_teardown(m: Any) -> None:
    while _UNTIL_TEARDOWN:
        _UNTIL_TEARDOWN.pop().stop()  # the earlier test's teardown: must neither fail nor write
    assert m.timeout.real != 9.0
    assert "timeout" not in vars(m)
    assert m.base_url != "https://evil.example"


def _attribute(m: Any) -> None:
    m.extra = "set by the test"


def _no_attribute(m: Any) -> None:
    with pytest.raises(AttributeError):
        _ = m.extra


DIRTIERS = [
    Dirtier("calls", _called, gone=_no_calls),
    Dirtier("attribute on a method child", _child_attribute, gone=lambda m: not hasattr(m.get, "retries")),
    Dirtier("return_value chain", _return_chain, gone=_no_chain),
    Dirtier("side_effect iterator partly consumed", _side_effect_iterator, gone=_no_side_effect),
    Dirtier("PropertyMock on type(mock)", _property_on_type, gone=_no_property),
    Dirtier("configure_mock", _configure_mock, gone=_not_configured),
    Dirtier("del mock.method", _deleted, gone=_post_is_back),
    Dirtier("method replaced", _replaced, gone=_signature_checked),
    Dirtier("attach_mock", _attached, gone=_nothing_attached),
    Dirtier("mock_add_spec", _add_spec, gone=_spec_is_back),
    Dirtier("magic method configured", _magic, gone=_magic_is_back),
    Dirtier("async method configured", _async_configured, gone=_async_fresh),
    Dirtier("__signature__ on a child", _signature_attr, gone=_signature_checked),
    Dirtier("seal", _sealed, gone=_not_sealed),
    Dirtier("non-callable attribute configured", _spec_state_read, gone=lambda m: m.timeout.real != 1.0),
    Dirtier("attribute on the mock", _attribute, gone=_no_attribute),
    Dirtier(
        "call on a method's return value",
        _return_value_used,
        gone=lambda m: mock.call().json() not in m.post.mock_calls,
    ),
    Dirtier("patch stopped after the lease", _patched_until_teardown, gone=_after_teardown),
    Dirtier(
        "PropertyMock patch stopped after the lease", _property_patched_until_teardown, gone=_after_teardown
    ),
    Dirtier(
        "a method's return value called",
        _return_value_called,
        gone=lambda m: mock.call() not in m.post.mock_calls,
    ),
]


def _autospec_as_on_python_312(spec: Any, *args: Any, **kwargs: Any) -> Any:
    """``create_autospec`` as Python 3.12 and later make it (gh-91803): each method comes with
    its return value made up front, so the pristine tree has mocks below the methods."""
    m = _create_autospec(spec, *args, **kwargs)
    for child in m._mock_children.values():
        if isinstance(child, mock.NonCallableMock) and child._mock_return_value is mock.DEFAULT:
            child.return_value = mock.AsyncMock() if isinstance(child, mock.AsyncMock) else mock.MagicMock()
    return m


_create_autospec = mock.create_autospec


@pytest.mark.asyncio
@pytest.mark.parametrize("isolation_verify", [False, True], ids=["verify-off", "verify-on"])
async def test_every_case_is_reset_and_seen_by_the_fingerprint(isolation_verify: bool) -> None:
    report = await check_isolation(
        autospec_service(ApiClient),
        DIRTIERS,
        pristine=_pristine,
        isolation_verify=isolation_verify,
        strict=True,
    )
    assert {case.outcome for case in report.cases} == {"reset"}


@pytest.mark.asyncio
async def test_every_case_is_reset_where_methods_come_with_their_return_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On Python 3.12+ a call on a method's return value lands in the method's ``mock_calls``
    although the method itself was not called (emulated on older Pythons)."""
    monkeypatch.setattr(mock, "create_autospec", _autospec_as_on_python_312)
    assert isinstance(autospec_service(ApiClient).factory().mock.post._mock_return_value, mock.MagicMock)
    report = await check_isolation(autospec_service(ApiClient), DIRTIERS, pristine=_pristine, strict=True)
    assert {case.outcome for case in report.cases} == {"reset"}


@pytest.mark.asyncio
async def test_many_concurrent_leases_over_few_instances_stay_isolated() -> None:
    await check_isolation(
        autospec_service(ApiClient), DIRTIERS, pristine=_pristine, strict=True, tasks=64, instances=3
    )


@pytest.mark.asyncio
async def test_without_its_reset_isolation_verify_catches_every_case() -> None:
    weakened = dataclasses.replace(autospec_service(ApiClient), reset=None)
    for dirtier in DIRTIERS:
        report = await check_isolation(weakened, [dirtier], pristine=_pristine, isolation_verify=True)
        assert [case.outcome for case in report.cases] == ["caught"], report


def test_a_reset_rebuilds_only_the_mocks_that_changed() -> None:
    double = autospec_service(ApiClient).factory()
    untouched = double.mock.post
    state = vars(untouched)
    double.mock.get("/x")
    double.reset()
    assert vars(double.mock.post) is state and double.mock.post is untouched
    assert double.mock.get.call_count == 0
