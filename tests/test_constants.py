"""Key builders: every Redis key the project writes, and parsing them back."""

from __future__ import annotations

from app.constants import idempotency_key, parse_rate_key, rate_key


def test_rate_keys_round_trip_for_ipv4_and_ipv6_clients() -> None:
    """``rate:{client}:{path}`` parses back even when the client holds colons."""
    for client, path in [("203.0.113.7", "/movies"), ("2001:db8::1", "/movies/5/ratings")]:
        assert parse_rate_key(rate_key(client, path)) == (client, path)


def test_rate_keys_round_trip_for_ipv6_64_clients_and_templates() -> None:
    """A /64 identity holds ``:/`` itself; the template still parses back whole."""
    for client, template in [
        ("2001:db8:1:2::/64", "/movies/{movie_id}"),
        ("::/64", "/{unmatched}"),
        ("unknown", "/users/{user_id}/recommendations/refresh"),
    ]:
        assert parse_rate_key(rate_key(client, template)) == (client, template)


def test_non_rate_keys_do_not_parse() -> None:
    """Other prefixes or malformed keys give None."""
    assert parse_rate_key("cache:movies:gen") is None
    assert parse_rate_key("rate:no-path") is None
    assert parse_rate_key("rate::/movies") is None


def test_idempotency_key_layout() -> None:
    """``idem:{client}:{method}:{path}:{key}``."""
    assert idempotency_key("1.2.3.4", "POST", "/movies", "k") == "idem:1.2.3.4:POST:/movies:k"
