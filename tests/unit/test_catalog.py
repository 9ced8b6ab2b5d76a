from __future__ import annotations

import pytest

from blueprint import catalog


@pytest.mark.parametrize("name", list(catalog.SERVICES))
def test_the_api_a_call_reads_is_what_the_service_serves(name: str) -> None:
    # `blueprint call` reads the API from the generated module alone; it must agree with
    # what `blueprint serve` registers.
    assert [s.full_name for s in catalog.api(name)] == list(catalog.spec(name).grpc_services)


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(catalog.UnknownService, match="services: diag, shortener"):
        catalog.api("nosuch")
