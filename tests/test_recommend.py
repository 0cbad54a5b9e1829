"""The recommender on hand-computed data: exact scores, exclusions, fallback, determinism."""

from __future__ import annotations

import random

import pytest

from app.recommend import (
    GENRE_BOOST,
    RatingsIndex,
    Recommendation,
    popular,
    popularity,
    recommend,
)

# user, movie, score — the worked example in the module docstring's terms:
# means: u1 10/3, u2 14/3, u3 10/3, u4 8/3; global mean 42/12 = 3.5.
RATINGS = [
    (1, 1, 5.0), (1, 2, 4.0), (1, 3, 1.0),
    (2, 1, 4.0), (2, 2, 5.0), (2, 4, 5.0),
    (3, 3, 5.0), (3, 5, 4.0), (3, 1, 1.0),
    (4, 1, 5.0), (4, 3, 1.0), (4, 5, 2.0),
]  # fmt: skip
GENRES = {1: ["Drama"], 2: ["Drama"], 3: ["Horror"], 4: ["Comedy"], 5: ["Horror"]}


def test_collaborative_prediction_matches_the_hand_computation() -> None:
    """For user 4 only film 2 is positively similar to what they rated:
    sim(1,2) = (5/3·2/3 - 2/3·1/3) / (√127/3 · √5/3) = 8/√635 > 0, so pred(2) = 5·sim/sim = 5.0.
    Film 4 is only negatively similar (-2/9 through user 2), so it comes from the fallback:
    (5·3.5 + 5) / (5 + 1) = 3.75 (no boost: user 4 liked Drama, film 4 is Comedy)."""
    strategy, picks = recommend(RatingsIndex.build(RATINGS), GENRES, 4, limit=10)
    assert strategy == "mixed"
    assert picks == [Recommendation(2, 5.0, "similar"), Recommendation(4, 3.75, "popular")]


def test_user_without_ratings_gets_bayesian_popularity_order() -> None:
    """(5·3.5 + Σr)/(5 + n): film 2 3.7857, 4 3.75, 1 3.6111, 5 3.3571, 3 3.0625."""
    strategy, picks = recommend(RatingsIndex.build(RATINGS), GENRES, 99, limit=10)
    assert strategy == "popular"
    assert [(p.movie_id, p.score) for p in picks] == [
        (2, 3.7857), (4, 3.75), (1, 3.6111), (5, 3.3571), (3, 3.0625),
    ]  # fmt: skip
    assert {p.reason for p in picks} == {"popular"}


def test_genres_the_user_liked_are_boosted_in_the_fallback() -> None:
    """One liked Horror film: every Horror film gets exactly GENRE_BOOST on top of its base."""
    index = RatingsIndex.build([*RATINGS, (7, 3, 4.0)])
    base = popularity(index, GENRES)
    for pick in popular(index, GENRES, base, 7):
        boost = GENRE_BOOST if "Horror" in GENRES[pick.movie_id] else 0.0
        assert pick.score == round(base[pick.movie_id] + boost, 4)
    assert next(p.movie_id for p in popular(index, GENRES, base, 7)) == 5  # the unrated Horror


def _generated(seed: int) -> tuple[list[tuple[int, int, float]], dict[int, list[str]]]:
    rng = random.Random(seed)
    genres = {m: [rng.choice(["Drama", "Comedy", "Horror", "Action"])] for m in range(1, 81)}
    ratings = {
        (rng.randint(1, 40), rng.randint(1, 80)): rng.choice([1.0, 2.5, 3.0, 4.5, 5.0])
        for _ in range(900)
    }
    return [(u, m, s) for (u, m), s in ratings.items()], genres


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_never_recommends_a_rated_film_and_fills_the_list(seed: int) -> None:
    """For every user: no rated film, no duplicates, exactly ``limit`` picks, only catalog films."""
    ratings, genres = _generated(seed)
    index = RatingsIndex.build(ratings)
    for user_id in range(1, 41):
        _, picks = recommend(index, genres, user_id, limit=10)
        ids = [p.movie_id for p in picks]
        assert len(ids) == len(set(ids)) == 10
        assert not set(ids) & set(index.by_user.get(user_id, {}))
        assert set(ids) <= set(genres)


def test_same_data_in_any_order_gives_the_same_answer() -> None:
    """Deterministic: ties break by support, then id; input order does not matter."""
    ratings, genres = _generated(7)
    shuffled = list(ratings)
    random.Random(0).shuffle(shuffled)
    for user_id in (1, 5, 17):
        first = recommend(RatingsIndex.build(ratings), genres, user_id, limit=10)
        again = recommend(RatingsIndex.build(shuffled), genres, user_id, limit=10)
        assert first == again
