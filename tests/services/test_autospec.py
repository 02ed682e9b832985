from __future__ import annotations

from typing import cast
from unittest import mock

import pytest

from mockpool.services import autospec_service

from ._helpers import pool_of


class PaymentClient:
    timeout = 5.0

    def charge(self, user_id: str, cents: int) -> str:
        raise NotImplementedError

    def refund(self, charge_id: str) -> bool:
        raise NotImplementedError

    async def balance(self, user_id: str) -> int:
        raise NotImplementedError


def test_default_name_is_the_class_name() -> None:
    assert autospec_service(PaymentClient).name == "PaymentClient"
    assert autospec_service(PaymentClient, name="payments").name == "payments"
    with pytest.raises(TypeError, match="needs a class"):
        autospec_service(PaymentClient())  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_a_later_lease_sees_a_clean_mock_that_still_checks_signatures() -> None:
    async with pool_of(autospec_service(PaymentClient, max_size=1)) as pool:
        async with pool.acquire("PaymentClient") as client:
            assert isinstance(cast(object, client), PaymentClient)  # cast: keep mypy from narrowing
            client.charge.return_value = "ch_1"
            client.refund.side_effect = RuntimeError("down")
            client.balance.return_value = 100
            assert client.charge("u1", 500) == "ch_1"
            assert await client.balance("u1") == 100
            client.charge = mock.MagicMock(return_value="replaced")
            client.extra = "set by the test"
            first = client
        async with pool.acquire("PaymentClient") as client:
            assert client is first
            assert client.charge.call_count == 0
            assert client.mock_calls == []
            assert not hasattr(client, "extra")
            assert client.refund("ch_1") is not None  # the side effect is gone
            assert client.charge("u1", 500) != "ch_1"
            assert await client.balance("u1") != 100
            with pytest.raises(TypeError):
                client.charge("u1")  # a missing argument: the signature is still checked
        assert pool.stats("PaymentClient").created == 1
