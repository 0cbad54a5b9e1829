"""Catalog and ratings over HTTP: CRUD, validation, filters, errors, seeding."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from redis.asyncio import Redis

from app.config import Settings
from app.main import create_app
from app.seed import FILMS

MOVIE = {"title": "Heat", "year": 1995, "genres": ["Crime", "Drama"]}


async def test_create_returns_201_with_location_and_the_movie(client: httpx.AsyncClient) -> None:
    """POST → 201, Location points at a readable film, timestamps are timezone-aware."""
    created = await client.post("/movies", json=MOVIE)
    assert created.status_code == 201
    body = created.json()
    assert created.headers["location"] == f"/movies/{body['id']}"
    assert body["title"] == "Heat"
    assert body["genres"] == ["Crime", "Drama"]
    assert body["rating_average"] is None
    assert body["rating_count"] == 0
    assert body["created_at"].endswith("Z") or body["created_at"].endswith("+00:00")
    fetched = await client.get(created.headers["location"])
    assert fetched.json() == body


async def test_put_replaces_every_field_and_delete_removes(client: httpx.AsyncClient) -> None:
    """PUT → 200 with new values; DELETE → 204, then 404 everywhere."""
    movie_id = (await client.post("/movies", json=MOVIE)).json()["id"]
    replaced = await client.put(f"/movies/{movie_id}", json={"title": "Ronin", "year": 1998})
    assert replaced.status_code == 200
    assert replaced.json()["title"] == "Ronin"
    assert replaced.json()["genres"] == []
    deleted = await client.delete(f"/movies/{movie_id}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    for method in ["GET", "DELETE"]:
        missing = await client.request(method, f"/movies/{movie_id}")
        assert missing.status_code == 404
        assert missing.json() == {
            "detail": f"Movie {movie_id} not found",
            "request_id": missing.headers["x-request-id"],
        }
    put_missing = await client.put(f"/movies/{movie_id}", json=MOVIE)
    assert put_missing.status_code == 404


async def test_rating_again_replaces_the_earlier_score(client: httpx.AsyncClient) -> None:
    """One rating per user and film; the average follows the latest scores."""
    movie_id = (await client.post("/movies", json=MOVIE)).json()["id"]
    first = await client.post(f"/movies/{movie_id}/ratings", json={"user_id": 1, "score": 2})
    assert first.status_code == 201
    assert first.json()["score"] == 2
    await client.post(f"/movies/{movie_id}/ratings", json={"user_id": 1, "score": 4.5})
    await client.post(f"/movies/{movie_id}/ratings", json={"user_id": 2, "score": 3.5})
    movie = (await client.get(f"/movies/{movie_id}")).json()
    assert movie["rating_count"] == 2
    assert movie["rating_average"] == 4.0
    missing = await client.post("/movies/424242/ratings", json={"user_id": 1, "score": 2})
    assert missing.status_code == 404


@pytest.mark.parametrize(
    "payload",
    [
        {"user_id": 1, "score": 0},
        {"user_id": 1, "score": 5.5},
        {"user_id": 1, "score": 3.3},
        {"user_id": 0, "score": 3},
        {"user_id": 1},
        {"user_id": 1, "score": 3, "extra": True},
    ],
)
async def test_invalid_ratings_are_422(
    client: httpx.AsyncClient, payload: dict[str, object]
) -> None:
    """Scores are 0.5 to 5 in half steps, user ids positive, no unknown fields."""
    movie_id = (await client.post("/movies", json=MOVIE)).json()["id"]
    response = await client.post(f"/movies/{movie_id}/ratings", json=payload)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)


@pytest.mark.parametrize(
    "payload",
    [
        {"title": "", "year": 1995},
        {"title": "   ", "year": 1995},
        {"title": "x" * 201, "year": 1995},
        {"title": "Heat", "year": 1700},
        {"title": "Heat", "year": "soon"},
        {"title": "Heat", "year": 1995, "genres": ["x" * 41]},
        {"title": "Heat", "year": 1995, "genres": ["A"] * 11},
    ],
)
async def test_invalid_movies_are_422_and_nothing_is_stored(
    client: httpx.AsyncClient, payload: dict[str, object]
) -> None:
    """Schema constraints reject bad input with FastAPI's detail list."""
    response = await client.post("/movies", json=payload)
    assert response.status_code == 422
    assert (await client.get("/movies")).json()["total"] == 0


async def test_integral_float_year_is_accepted(client: httpx.AsyncClient) -> None:
    """JSON Schema calls 1959.0 an integer, so the API accepts it."""
    response = await client.post("/movies", json={"title": "Ben-Hur", "year": 1959.0})
    assert response.status_code == 201
    assert response.json()["year"] == 1959


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    """A body that is not JSON gets a 400 with a message, not a 500."""
    response = await client.post(
        "/movies", content=b'{"title": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {
        "detail": "Request body is not valid JSON",
        "request_id": response.headers["x-request-id"],
    }


async def test_list_pages_and_filters_by_genre_case_insensitively(
    client: httpx.AsyncClient,
) -> None:
    """limit/offset page through films by id; genre filters; total counts the filter."""
    for n in range(5):
        genres = ["Drama"] if n % 2 else ["Comedy"]
        await client.post(
            "/movies", json={"title": f"Film {n}", "year": 2000 + n, "genres": genres}
        )
    page = (await client.get("/movies", params={"limit": 2, "offset": 1})).json()
    assert [m["title"] for m in page["items"]] == ["Film 1", "Film 2"]
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 1)
    drama = (await client.get("/movies", params={"genre": "drama"})).json()
    assert [m["title"] for m in drama["items"]] == ["Film 1", "Film 3"]
    assert drama["total"] == 2


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=101", "offset=-1", "offset=1000001", "genre=", "limit=abc"]
)
async def test_out_of_bounds_paging_is_422(client: httpx.AsyncClient, query: str) -> None:
    """Paging parameters have sane bounds."""
    assert (await client.get(f"/movies?{query}")).status_code == 422


@pytest.mark.parametrize("movie_id", ["0", "2147483648", "abc"])
async def test_out_of_range_ids_are_422_not_500(client: httpx.AsyncClient, movie_id: str) -> None:
    """Ids are bounded by the database integer range."""
    assert (await client.get(f"/movies/{movie_id}")).status_code == 422


async def test_wrong_method_is_405_listing_every_allowed_method(client: httpx.AsyncClient) -> None:
    """Allow names the methods of every route on the path, not only the first."""
    collection = await client.request("PATCH", "/movies")
    assert collection.status_code == 405
    assert collection.headers["allow"] == "GET, POST"
    item = await client.request("POST", "/movies/1")
    assert item.headers["allow"] == "DELETE, GET, PUT"


async def test_health_is_200_and_ready_reports_each_check(client: httpx.AsyncClient) -> None:
    """Liveness without I/O; readiness reports database, redis and worker (here the worker is
    not required, so its absence is reported without failing readiness)."""
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    checks = ready.json()["checks"]
    assert set(checks) == {"database", "redis", "worker"}
    assert checks["worker"]["ok"] is False
    assert "no worker heartbeat" in checks["worker"]["detail"]


async def test_first_start_seeds_real_films_once(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """A fresh database gets the demo catalog, every film rated by the demo users; a second
    start adds nothing."""
    settings = make_settings(seed_demo_data=True)
    pages = []
    for _ in range(2):
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                pages.append((await client.get("/movies", params={"limit": 100})).json())
    first, page = pages
    assert len(FILMS) >= 50
    assert page["total"] == len(FILMS)
    assert page["items"][0]["title"] == "The Shawshank Redemption"
    counts = [item["rating_count"] for item in page["items"]]
    assert min(counts) > 0
    assert sum(counts) > 5_000
    assert all(0.5 <= item["rating_average"] <= 5 for item in page["items"])
    assert [item["rating_count"] for item in first["items"]] == counts


async def test_a_catalog_emptied_by_its_users_stays_empty_after_a_restart(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """Every film deleted, then a restart: the API starts (no crash on the seed marker) and
    does not bring the demo films back."""
    settings = make_settings(seed_demo_data=True)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            page = (await client.get("/movies", params={"limit": 100})).json()
            for item in page["items"]:
                assert (await client.delete(f"/movies/{item['id']}")).status_code == 204
    restarted = create_app(settings)
    async with restarted.router.lifespan_context(restarted):
        transport = httpx.ASGITransport(app=restarted)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/movies")).json()["total"] == 0


@pytest.mark.parametrize("title", ["\u0085", "\u00a0Heat", "  Heat  "])
async def test_titles_that_json_schema_calls_non_blank_are_accepted(
    client: httpx.AsyncClient, title: str
) -> None:
    """The schema's notion of "not blank" and the server's agree, and only ASCII blanks are
    trimmed, so a valid title never turns empty."""
    response = await client.post("/movies", json={"title": title, "year": 2000})
    assert response.status_code == 201
    assert response.json()["title"] == title.strip(" ")


async def test_a_started_api_freezes_its_start_up_objects_out_of_the_collectors_sight(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """gc_freeze (the default): after start-up, full collections no longer rescan the
    framework's objects; off, nothing is frozen."""
    import gc

    gc.unfreeze()
    try:
        app = create_app(make_settings(gc_freeze=True))
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 0
        gc.unfreeze()
        quiet = create_app(make_settings(gc_freeze=False))
        async with quiet.router.lifespan_context(quiet):
            assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()
