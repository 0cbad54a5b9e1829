"""Catalog and ratings persistence: async SQLAlchemy queries, returning API models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, delete, exists, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import GenreRow, MovieRow, RatingRow, RecommendationRow, utcnow
from app.models import Movie, MovieIn, MoviePage, Rating, RatingIn, RecommendedMovie


def _genre_rows(genres: Sequence[str]) -> list[GenreRow]:
    return [
        GenreRow(genre=genre, genre_key=genre.casefold(), position=position)
        for position, genre in enumerate(genres)
    ]


def _to_movie(row: MovieRow, stats: tuple[float | None, int]) -> Movie:
    average, count = stats
    return Movie(
        id=row.id,
        title=row.title,
        year=row.year,
        genres=[genre.genre for genre in row.genres],
        rating_average=round(average, 2) if average is not None else None,
        rating_count=count,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def _rating_stats(
    session: AsyncSession, movie_ids: Sequence[int]
) -> dict[int, tuple[float | None, int]]:
    if not movie_ids:
        return {}
    rows = await session.execute(
        select(RatingRow.movie_id, func.avg(RatingRow.score), func.count())
        .where(RatingRow.movie_id.in_(movie_ids))
        .group_by(RatingRow.movie_id)
    )
    return {movie_id: (avg, count) for movie_id, avg, count in rows}


def _filtered(statement: Select[Any], genre: str | None) -> Select[Any]:
    if genre is None:
        return statement
    return statement.where(
        MovieRow.id.in_(select(GenreRow.movie_id).where(GenreRow.genre_key == genre.casefold()))
    )


async def list_movies(
    session: AsyncSession, *, limit: int, offset: int, genre: str | None
) -> MoviePage:
    """One page of films ordered by id, with the total count for the filter."""
    total = await session.scalar(_filtered(select(func.count(MovieRow.id)), genre))
    rows = (
        await session.scalars(
            _filtered(select(MovieRow), genre).order_by(MovieRow.id).limit(limit).offset(offset)
        )
    ).all()
    stats = await _rating_stats(session, [row.id for row in rows])
    items = [_to_movie(row, stats.get(row.id, (None, 0))) for row in rows]
    return MoviePage(items=items, total=total or 0, limit=limit, offset=offset)


async def get_movie(session: AsyncSession, movie_id: int) -> Movie | None:
    """One film, or None."""
    row = await session.get(MovieRow, movie_id)
    if row is None:
        return None
    stats = await _rating_stats(session, [movie_id])
    return _to_movie(row, stats.get(movie_id, (None, 0)))


async def create_movie(session: AsyncSession, data: MovieIn) -> Movie:
    """Insert a film and commit."""
    row = MovieRow(title=data.title, year=data.year, genres=_genre_rows(data.genres))
    session.add(row)
    await session.commit()
    return _to_movie(row, (None, 0))


async def replace_movie(session: AsyncSession, movie_id: int, data: MovieIn) -> Movie | None:
    """Replace every field of a film and commit; None if it does not exist."""
    row = await session.get(MovieRow, movie_id)
    if row is None:
        return None
    row.title = data.title
    row.year = data.year
    row.genres.clear()
    await session.flush()
    row.genres.extend(_genre_rows(data.genres))
    row.updated_at = utcnow()
    await session.commit()
    stats = await _rating_stats(session, [movie_id])
    return _to_movie(row, stats.get(movie_id, (None, 0)))


async def delete_movie(session: AsyncSession, movie_id: int) -> bool:
    """Delete a film with its genres and ratings; False if it did not exist."""
    result = await session.execute(delete(MovieRow).where(MovieRow.id == movie_id))
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def rate_movie(session: AsyncSession, movie_id: int, data: RatingIn) -> Rating | None:
    """Upsert a user's score for a film; None if the film does not exist."""
    if await session.get(MovieRow, movie_id) is None:
        return None
    now = utcnow()
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = {"user_id": data.user_id, "movie_id": movie_id, "score": data.score, "rated_at": now}
    statement = insert(RatingRow).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[RatingRow.user_id, RatingRow.movie_id],
        set_={"score": data.score, "rated_at": now},
    )
    try:
        await session.execute(statement)
        await session.commit()
    except IntegrityError:
        # The film was deleted between the check and the insert (foreign key).
        await session.rollback()
        return None
    return Rating(movie_id=movie_id, user_id=data.user_id, score=data.score, rated_at=now)


async def user_has_ratings(session: AsyncSession, user_id: int) -> bool:
    """Whether a user rated any film (one lookup on the ratings primary key's leading column)."""
    return bool(await session.scalar(select(exists().where(RatingRow.user_id == user_id))))


async def count_movies(session: AsyncSession) -> int:
    """How many films the catalog holds."""
    return int(await session.scalar(select(func.count(MovieRow.id))) or 0)


async def get_recommendations(
    session: AsyncSession, user_id: int
) -> tuple[RecommendationRow, list[RecommendedMovie]] | None:
    """A user's stored recommendations with current titles (films deleted since are dropped)."""
    row = await session.get(RecommendationRow, user_id)
    if row is None:
        return None
    ids = [item["movie_id"] for item in row.items]
    titles = dict(
        (
            await session.execute(select(MovieRow.id, MovieRow.title).where(MovieRow.id.in_(ids)))
        ).all()
    )
    items = [
        RecommendedMovie(
            movie_id=item["movie_id"],
            title=titles[item["movie_id"]],
            score=item["score"],
            reason=item["reason"],
        )
        for item in row.items
        if item["movie_id"] in titles
    ]
    return row, items
