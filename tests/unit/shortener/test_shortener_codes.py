"""Code generation: base62 Snowflake codes, the guide's hash with a counter on collision,
and what incoming codes may look like."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blueprint.infra.ids import base62
from blueprint.shortener import codes
from blueprint.shortener.errors import CodesExhausted, CodeTaken, Refused
from blueprint.shortener.links import CodeScheme, LinkService
from blueprint.shortener.records import ClickStats, DeleteOutcome, Link

BASE62 = set(string.digits + string.ascii_letters)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Ids:
    def __init__(self, start: int = 1_000_000_000_000) -> None:
        self.next = start

    async def next_id(self) -> int:
        self.next += 1
        return self.next


class Store:
    """Links in a dict; `taken` codes behave as if another row held them."""

    def __init__(self, taken: frozenset[str] | set[str] = frozenset()) -> None:
        self.links: dict[str, Link] = {}
        self.taken = set(taken)
        self.attempts: list[str] = []

    async def insert_link(
        self, link: Link, token_hash: str, idempotency_key: str | None = None
    ) -> Link:
        self.attempts.append(link.code)
        if link.code in self.taken or link.code in self.links:
            raise CodeTaken(link.code)
        self.links[link.code] = link
        return link

    async def find_link(self, code: str) -> Link | None:
        return self.links.get(code)

    async def delete_link(self, code: str, token_hash: str, now: datetime) -> DeleteOutcome:
        raise NotImplementedError

    async def click_stats(self, code: str, since: object) -> ClickStats:
        raise NotImplementedError


def service(store: Store, scheme: CodeScheme = "snowflake", ids: Ids | None = None) -> LinkService:
    return LinkService(store, ids or Ids(), scheme=scheme, salt="pepper", clock=lambda: NOW)


# --- snowflake -------------------------------------------------------------------------


@given(st.integers(0, 2**63 - 1))
def test_a_snowflake_code_is_the_base62_of_its_id(link_id: int) -> None:
    code = codes.snowflake_code(link_id)
    assert set(code) <= BASE62 and len(code) <= base62.ID_WIDTH
    assert base62.decode(code) == link_id


async def test_snowflake_links_get_the_code_of_their_id() -> None:
    store = Store()
    created = await service(store).shorten("https://example.com/", None, None)
    assert created.link.code == base62.encode(created.link.id)
    assert store.attempts == [created.link.code]


async def test_a_snowflake_code_squatted_by_an_alias_is_skipped_for_the_next_id() -> None:
    ids = Ids()
    squatted = base62.encode(ids.next + 1)
    store = Store(taken={squatted})
    created = await service(store, ids=ids).shorten("https://example.com/", None, None)
    assert store.attempts == [squatted, created.link.code]
    assert created.link.code == base62.encode(base62.decode(squatted) + 1)


# --- hash --------------------------------------------------------------------------------


def test_hash_codes_are_seven_base62_characters_fixed_by_url_salt_and_attempt() -> None:
    first = codes.hash_code("https://example.com/", "pepper", 0)
    assert len(first) == codes.HASH_CODE_LENGTH and set(first) <= BASE62
    assert codes.hash_code("https://example.com/", "pepper", 0) == first
    assert codes.hash_code("https://example.com/", "salt", 0) != first
    assert codes.hash_code("https://example.com/b", "pepper", 0) != first
    assert codes.hash_code("https://example.com/", "pepper", 1) != first
    tried = list(codes.hash_codes("https://example.com/", "pepper", 5))
    assert tried[0] == first and len(set(tried)) == 5


def test_hash_codes_spread_over_the_alphabet() -> None:
    seen = [codes.hash_code(f"https://example.com/{n}", "s", 0) for n in range(3000)]
    assert len(set(seen)) == len(seen)
    for position in range(codes.HASH_CODE_LENGTH):
        # 62 symbols, 3000 draws: every symbol should turn up in every position.
        assert len({code[position] for code in seen}) == 62


async def test_hash_scheme_uses_the_hash_of_the_url() -> None:
    store = Store()
    created = await service(store, "hash").shorten("https://example.com/", None, None)
    assert created.link.code == codes.hash_code("https://example.com/", "pepper", 0)


async def test_hash_collision_rehashes_with_a_counter() -> None:
    url = "https://example.com/"
    taken = {codes.hash_code(url, "pepper", 0), codes.hash_code(url, "pepper", 1)}
    store = Store(taken=taken)
    created = await service(store, "hash").shorten(url, None, None)
    assert created.link.code == codes.hash_code(url, "pepper", 2)
    assert store.attempts == [codes.hash_code(url, "pepper", n) for n in range(3)]


async def test_the_same_url_shortened_twice_gets_the_next_code() -> None:
    store = Store()
    links = service(store, "hash")
    first = await links.shorten("https://example.com/", None, None)
    second = await links.shorten("https://example.com/", None, None)
    assert first.link.code != second.link.code
    assert second.link.code == codes.hash_code("https://example.com/", "pepper", 1)


async def test_hash_scheme_gives_up_when_every_attempt_is_taken() -> None:
    url = "https://example.com/"
    store = Store(taken=set(codes.hash_codes(url, "pepper")))
    with pytest.raises(CodesExhausted, match="custom_alias"):
        await service(store, "hash").shorten(url, None, None)
    assert len(store.attempts) == codes.MAX_HASH_ATTEMPTS and not store.links


# --- aliases and expiry --------------------------------------------------------------


async def test_an_alias_is_the_code_and_a_taken_alias_is_not_replaced() -> None:
    store = Store()
    links = service(store)
    created = await links.shorten("https://example.com/", "my-link", timedelta(hours=1))
    assert created.link.code == "my-link"
    assert created.link.expires_at == NOW + timedelta(hours=1)
    with pytest.raises(CodeTaken):
        await links.shorten("https://other.example/", "my-link", None)
    assert store.links["my-link"].url == "https://example.com/"


async def test_each_link_gets_its_own_management_token() -> None:
    links = service(Store())
    tokens = {(await links.shorten("https://example.com/", None, None)).management_token}
    tokens.add((await links.shorten("https://example.com/", None, None)).management_token)
    assert len(tokens) == 2 and all(len(token) >= 32 for token in tokens)


# --- incoming codes --------------------------------------------------------------------


@pytest.mark.parametrize("code", ["a", "STBkZGdUPI", "my-link", "x_y", "Z" * 32])
def test_codes_a_request_may_name(code: str) -> None:
    assert codes.check_code(code) == code


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("", "required"),
        ("a" * 33, "at most 32"),
        ("a/b", "only letters"),
        ("a b", "only letters"),
        ("p\u0430ypal", "only letters"),
        ("../etc", "only letters"),
    ],
)
def test_codes_no_link_can_have_are_refused(code: str, why: str) -> None:
    with pytest.raises(Refused, match=why):
        codes.check_code(code)
