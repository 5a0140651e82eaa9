"""Pagination of API lists.

Lists answer a JSON array; `?page=` and `?page_size=` choose the page and the
`X-Pagination` header carries the totals (flask-smorest's convention). Use:

    @blp.paginate(SelectPage, page_size=50, max_page_size=1000)
    def get(self):
        return select(Member).order_by(Member.id)   # items are dumped by @blp.response
"""

from __future__ import annotations

from flask_smorest import Page
from sqlalchemy import func, select

from extensions import db


class SelectPage(Page):
    """A page of a SQLAlchemy 2 `select()`; counts and slices in the database."""

    @property
    def items(self):
        return list(
            db.session.scalars(
                self.collection.limit(self.page_params.page_size).offset(
                    self.page_params.first_item
                )
            )
        )

    @property
    def item_count(self) -> int:
        return db.session.scalar(
            select(func.count()).select_from(self.collection.order_by(None).subquery())
        ) or 0
