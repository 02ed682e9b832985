"""A tiny async CRUD layer over the shop model, in the manner of fastcrud's ``FastCRUD``.

``CRUD(Model)`` offers ``create``, ``get``, ``exists``, ``count``, ``get_multi`` (filters,
sorting, offset/limit, total count), ``get_joined`` (a join with a prefixed flat row),
``update`` and ``delete``. Filters are keyword arguments: ``name="x"`` or ``field__op=value``
with ``op`` one of ``gt gte lt lte ne in not_in like ilike startswith is``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, and_, delete, func, inspect, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .model import Base

__all__ = ("CRUD", "compute_offset", "paginated_response")

M = TypeVar("M", bound=Base)

_OPS: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
    "ne": operator.ne,
    "in": lambda col, v: col.in_(v),
    "not_in": lambda col, v: col.not_in(v),
    "like": lambda col, v: col.like(v),
    "ilike": lambda col, v: col.ilike(v),
    "startswith": lambda col, v: col.startswith(v),
    "is": lambda col, v: col.is_(v),
}


class CRUD(Generic[M]):
    def __init__(self, model: type[M]) -> None:
        self.model = model
        self._columns = {c.key: c for c in inspect(model).columns}

    # -- filters -------------------------------------------------------------------------------

    def _where(self, filters: Mapping[str, Any]) -> list[ColumnElement[bool]]:
        clauses = []
        for key, value in filters.items():
            name, _, op = key.partition("__")
            column = self._columns.get(name)
            if column is None:
                raise ValueError(f"{self.model.__name__} has no column {name!r}")
            if not op:
                clauses.append(column == value)
            elif op in _OPS:
                clauses.append(_OPS[op](column, value))
            else:
                raise ValueError(f"unknown filter operator {op!r} in {key!r}")
        return clauses

    def _select(
        self, filters: Mapping[str, Any]
    ) -> Any:  # Select[tuple[M]] in SQLAlchemy 2.0, Select[M] in 2.1
        return select(self.model).where(*self._where(filters))

    # -- create / read -------------------------------------------------------------------------

    async def create(self, db: AsyncSession, *, commit: bool = True, **values: Any) -> M:
        obj = self.model(**values)
        db.add(obj)
        if commit:
            await db.commit()
            await db.refresh(obj)
        else:
            await db.flush()
        return obj

    async def get(self, db: AsyncSession, **filters: Any) -> M | None:
        return (await db.scalars(self._select(filters).limit(2))).one_or_none()

    async def exists(self, db: AsyncSession, **filters: Any) -> bool:
        return bool(await db.scalar(select(self._select(filters).exists())))

    async def count(self, db: AsyncSession, **filters: Any) -> int:
        stmt = select(func.count()).select_from(self.model).where(*self._where(filters))
        return int(await db.scalar(stmt) or 0)

    async def get_multi(
        self,
        db: AsyncSession,
        *,
        offset: int = 0,
        limit: int | None = 100,
        sort_columns: str | Sequence[str] = "id",
        sort_orders: str | Sequence[str] = "asc",
        **filters: Any,
    ) -> dict[str, Any]:
        """``{"data": [rows], "total_count": n}``: n counts all matching rows, not the page."""
        if offset < 0 or (limit is not None and limit < 0):
            raise ValueError("offset and limit must be >= 0")
        columns = [sort_columns] if isinstance(sort_columns, str) else list(sort_columns)
        orders = [sort_orders] * len(columns) if isinstance(sort_orders, str) else list(sort_orders)
        if len(orders) != len(columns):
            raise ValueError("sort_orders must match sort_columns")
        stmt = self._select(filters)
        for name, order in zip(columns, orders, strict=True):
            if order not in ("asc", "desc"):
                raise ValueError(f"sort order must be 'asc' or 'desc', not {order!r}")
            column = self._columns[name]
            stmt = stmt.order_by(column.asc() if order == "asc" else column.desc())
        rows = (await db.scalars(stmt.offset(offset).limit(limit))).all()
        return {"data": list(rows), "total_count": await self.count(db, **filters)}

    async def get_joined(
        self,
        db: AsyncSession,
        join_model: type[Base],
        *,
        join_prefix: str,
        join_type: str = "left",
        **filters: Any,
    ) -> list[dict[str, Any]]:
        """Rows of this model joined with ``join_model`` (the foreign key between them), as
        flat dicts: the join model's columns carry ``join_prefix``."""
        joined = inspect(join_model).columns
        stmt = (
            select(self.model, join_model)
            .where(*self._where(filters))
            .order_by(*inspect(self.model).primary_key)
        )
        stmt = stmt.join(join_model, isouter=join_type == "left")
        result = []
        rows: Any = (await db.execute(stmt)).all()
        for obj, other in rows:
            row = {c.key: getattr(obj, c.key) for c in self._columns.values()}
            for c in joined:
                row[join_prefix + c.key] = None if other is None else getattr(other, c.key)
            result.append(row)
        return result

    # -- update / delete -----------------------------------------------------------------------

    async def update(
        self, db: AsyncSession, values: Mapping[str, Any], *, commit: bool = True, **filters: Any
    ) -> int:
        if not filters:
            raise ValueError("update without filters would change every row")
        stmt = update(self.model).where(and_(*self._where(filters))).values(**values)
        rowcount = (await db.execute(stmt)).rowcount  # type: ignore[attr-defined]
        if commit:
            await db.commit()
        return int(rowcount)

    async def delete(self, db: AsyncSession, *, commit: bool = True, **filters: Any) -> int:
        if not filters:
            raise ValueError("delete without filters would remove every row")
        rowcount = (await db.execute(delete(self.model).where(*self._where(filters)))).rowcount  # type: ignore[attr-defined]
        if commit:
            await db.commit()
        return int(rowcount)


def compute_offset(page: int, items_per_page: int) -> int:
    if page < 1 or items_per_page < 1:
        raise ValueError("page and items_per_page start at 1")
    return (page - 1) * items_per_page


def paginated_response(crud_data: Mapping[str, Any], page: int, items_per_page: int) -> dict[str, Any]:
    total = int(crud_data["total_count"])
    return {
        "data": crud_data["data"],
        "total_count": total,
        "has_more": page * items_per_page < total,
        "page": page,
        "items_per_page": items_per_page,
    }
