"""Item-based collaborative filtering with a popularity/genre fallback. Pure: no I/O.

For a user u with enough ratings:

* every user's scores are centred on their own mean (``c_vi = r_vi - mean_v``), so a harsh and a
  generous rater who agree on the order of two films count as agreeing;
* the similarity of films i and j is the cosine of their centred score vectors,
  ``sim(i, j) = Σ_v c_vi·c_vj / (‖c_i‖·‖c_j‖)``, summed over users v who rated both;
* a film j the user has not rated is predicted from the films i it resembles (positive
  similarity only): ``pred(j) = Σ_i sim(i, j)·r_ui / Σ_i sim(i, j)``;
* films are ranked by prediction, then by support ``Σ_i sim(i, j)``, then by id.

Users with fewer than ``min_ratings`` ratings, and any places CF leaves empty, are filled from a
fallback: the Bayesian-average score of each film (``(C·m + Σr)/(C + n)``, m the global mean),
plus ``GENRE_BOOST`` for films of a genre the user liked. Rated films are never recommended, and
the same data always gives the same answer.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

MIN_RATINGS_FOR_CF = 3
BAYES_PRIOR_WEIGHT = 5.0
GENRE_BOOST = 0.5
LIKED_THRESHOLD = 3.5


@dataclass(frozen=True)
class Recommendation:
    """One recommended film and the score it was ranked by."""

    movie_id: int
    score: float
    reason: str  # "similar" (collaborative filtering) or "popular" (fallback)


class RatingsIndex:
    """All ratings indexed both ways with each user's mean. Centred scores and film norms are
    computed on first use and kept, so one user's refresh touches only their neighbourhood and a
    batch over many users computes each piece once."""

    def __init__(
        self,
        by_user: Mapping[int, Mapping[int, float]],
        by_movie: Mapping[int, Mapping[int, float]],
    ) -> None:
        self.by_user = by_user
        self.by_movie = by_movie
        self.user_mean = {u: sum(s.values()) / len(s) for u, s in by_user.items()}
        self._centred_by_user: dict[int, list[tuple[int, float]]] = {}
        self._centred_by_movie: dict[int, list[tuple[int, float]]] = {}
        self._norm: dict[int, float] = {}

    @classmethod
    def build(cls, ratings: Iterable[tuple[int, int, float]]) -> RatingsIndex:
        """Index (user_id, movie_id, score) triples."""
        by_user: dict[int, dict[int, float]] = defaultdict(dict)
        by_movie: dict[int, dict[int, float]] = defaultdict(dict)
        for user_id, movie_id, score in ratings:
            by_user[user_id][movie_id] = score
            by_movie[movie_id][user_id] = score
        return cls(dict(by_user), dict(by_movie))

    def centred_by_user(self, user_id: int) -> list[tuple[int, float]]:
        """(movie, c_vj) for every film a user rated."""
        found = self._centred_by_user.get(user_id)
        if found is None:
            mean = self.user_mean[user_id]
            found = [(m, s - mean) for m, s in self.by_user[user_id].items()]
            self._centred_by_user[user_id] = found
        return found

    def centred_by_movie(self, movie_id: int) -> list[tuple[int, float]]:
        """(user, c_vi) for every user who rated a film."""
        found = self._centred_by_movie.get(movie_id)
        if found is None:
            mean = self.user_mean
            found = [(u, s - mean[u]) for u, s in self.by_movie.get(movie_id, {}).items()]
            self._centred_by_movie[movie_id] = found
        return found

    def norm(self, movie_id: int) -> float:
        """‖c_i‖: the length of a film's centred score vector."""
        found = self._norm.get(movie_id)
        if found is None:
            found = math.sqrt(sum(c * c for _, c in self.centred_by_movie(movie_id)))
            self._norm[movie_id] = found
        return found


def collaborative(index: RatingsIndex, user_id: int) -> list[Recommendation]:
    """Item-based CF predictions for every film reachable through co-ratings."""
    own = index.by_user.get(user_id, {})
    weighted: dict[int, float] = defaultdict(float)
    support: dict[int, float] = defaultdict(float)
    for i, r_ui in own.items():
        norm_i = index.norm(i)
        if norm_i == 0:
            continue
        dots: dict[int, float] = defaultdict(float)  # Σ_v c_vi·c_vj for this i, every j
        for v, c_vi in index.centred_by_movie(i):
            if v == user_id or c_vi == 0:
                continue
            for j, c_vj in index.centred_by_user(v):
                dots[j] += c_vi * c_vj
        for j, dot in dots.items():
            if dot <= 0 or j in own:
                continue
            # dot > 0 means some c_vj != 0, so norm(j) > 0.
            similarity = dot / (norm_i * index.norm(j))
            weighted[j] += similarity * r_ui
            support[j] += similarity
    ranked = sorted(support, key=lambda j: (-weighted[j] / support[j], -support[j], j))
    return [Recommendation(j, round(weighted[j] / support[j], 4), "similar") for j in ranked]


def popularity(index: RatingsIndex, movie_ids: Iterable[int]) -> dict[int, float]:
    """Bayesian-average score of each film: few ratings pull it toward the global mean."""
    all_scores = [s for ratings in index.by_movie.values() for s in ratings.values()]
    global_mean = sum(all_scores) / len(all_scores) if all_scores else 0.0
    scores = {}
    for movie_id in movie_ids:
        raters = index.by_movie.get(movie_id, {})
        total = sum(raters.values())
        scores[movie_id] = (BAYES_PRIOR_WEIGHT * global_mean + total) / (
            BAYES_PRIOR_WEIGHT + len(raters)
        )
    return scores


def popular(
    index: RatingsIndex,
    movie_genres: Mapping[int, Sequence[str]],
    base: Mapping[int, float],
    user_id: int,
) -> list[Recommendation]:
    """Popularity (``base``, from :func:`popularity`), boosted for genres the user liked."""
    own = index.by_user.get(user_id, {})
    liked_genres = {
        genre.casefold()
        for movie_id, score in own.items()
        if score >= LIKED_THRESHOLD
        for genre in movie_genres.get(movie_id, ())
    }
    scored = []
    for movie_id, genres in movie_genres.items():
        if movie_id in own:
            continue
        score = base[movie_id]
        if liked_genres and liked_genres.intersection(g.casefold() for g in genres):
            score += GENRE_BOOST
        scored.append((round(score, 4), movie_id))
    scored.sort(key=lambda pair: (-pair[0], pair[1]))
    return [Recommendation(movie_id, score, "popular") for score, movie_id in scored]


def recommend(
    index: RatingsIndex,
    movie_genres: Mapping[int, Sequence[str]],
    user_id: int,
    limit: int,
    base: Mapping[int, float] | None = None,
) -> tuple[str, list[Recommendation]]:
    """Top ``limit`` films for a user and the strategy used: "collaborative", "mixed" or
    "popular". Only films in ``movie_genres`` (the catalog) are recommended; pass ``base`` (from
    :func:`popularity`) when recommending for many users at once."""
    picks: list[Recommendation] = []
    if len(index.by_user.get(user_id, {})) >= MIN_RATINGS_FOR_CF:
        picks = [r for r in collaborative(index, user_id) if r.movie_id in movie_genres][:limit]
    cf_count = len(picks)
    if len(picks) < limit:
        chosen = {r.movie_id for r in picks}
        if base is None:
            base = popularity(index, movie_genres)
        fill = (r for r in popular(index, movie_genres, base, user_id) if r.movie_id not in chosen)
        for recommendation in fill:
            if len(picks) == limit:
                break
            picks.append(recommendation)
    if cf_count and cf_count == len(picks):
        return "collaborative", picks
    return ("mixed" if cf_count else "popular"), picks
