"""The shop's test bodies, written once and run by both suites (``before/`` and ``after/``).

Each test takes the ``session`` fixture, an ``AsyncSession`` on a database holding the schema
and the seed (``model.SEED``) and nothing else: the suites' conftests differ in how they make
it. The bodies check real behaviour: what a test wrote is visible to it, what other tests wrote
is not, constraints raise ``IntegrityError``, cascades (ORM and ``ON DELETE``) run.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete, func, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from .crud import CRUD, compute_offset, paginated_response
from .model import (
    SEED,
    Address,
    AuditLog,
    Base,
    Cart,
    Category,
    Coupon,
    Order,
    OrderItem,
    Payment,
    Product,
    Profile,
    Review,
    Setting,
    Shipment,
    Tag,
    User,
    product_tags,
)
from .shop import (
    CouponError,
    OrderError,
    OutOfStockError,
    add_to_cart,
    average_rating,
    checkout,
    pay,
    place_order,
    ship,
)

users = CRUD(User)
products = CRUD(Product)
orders = CRUD(Order)
categories = CRUD(Category)
reviews = CRUD(Review)
settings = CRUD(Setting)


# -- helpers ------------------------------------------------------------------------------------


async def make_user(db: AsyncSession, name: str = "alice", **values: Any) -> User:
    return await users.create(db, email=values.pop("email", f"{name}@example.com"), name=name, **values)


async def make_products(db: AsyncSession, *prices: int, stock: int = 10) -> list[Product]:
    made = [
        Product(sku=f"SKU-{i}", name=f"product {i}", price_cents=price, stock=stock, category_id=1 + i % 2)
        for i, price in enumerate(prices, start=1)
    ]
    db.add_all(made)
    await db.commit()
    return made


async def count(db: AsyncSession, model: type[Base]) -> int:
    return int(await db.scalar(select(func.count()).select_from(model)) or 0)


async def paid_order(db: AsyncSession) -> Order:
    user = await make_user(db)
    (product,) = await make_products(db, 1500)
    order = await place_order(db, user.id, {product.id: 2})
    await pay(db, order.id, 3000)
    return order


async def paid_order_of(db: AsyncSession, name: str) -> Order:
    user = await make_user(db, name)
    product = await products.create(db, sku=f"SKU-{name}", name=name, price_cents=700, stock=1)
    order = await place_order(db, user.id, {product.id: 1})
    await pay(db, order.id, 700)
    return order


# -- users: create, read, update, delete ----------------------------------------------------------


async def test_create_user_assigns_id_and_defaults(session: AsyncSession) -> None:
    user = await make_user(session)
    assert user.id == 1
    assert user.is_active is True and user.is_superuser is False
    assert user.created_at is not None


async def test_get_user_by_email(session: AsyncSession) -> None:
    await make_user(session, "alice")
    await make_user(session, "bob")
    found = await users.get(session, email="bob@example.com")
    assert found is not None and found.name == "bob"


async def test_get_missing_user_returns_none(session: AsyncSession) -> None:
    assert await users.get(session, email="nobody@example.com") is None


async def test_duplicate_email_raises_integrity_error(session: AsyncSession) -> None:
    await make_user(session, "alice")
    with pytest.raises(IntegrityError, match=r"UNIQUE constraint failed: users.email"):
        await make_user(session, "alice2", email="alice@example.com")
    await session.rollback()
    assert await users.count(session) == 1


async def test_user_email_is_required(session: AsyncSession) -> None:
    session.add(User(name="no email"))
    with pytest.raises(IntegrityError, match=r"NOT NULL constraint failed: users.email"):
        await session.commit()


async def test_update_user_name(session: AsyncSession) -> None:
    user = await make_user(session)
    assert await users.update(session, {"name": "alicia"}, id=user.id) == 1
    session.expunge_all()
    found = await users.get(session, id=user.id)
    assert found is not None and found.name == "alicia"


async def test_update_matching_nothing_returns_zero(session: AsyncSession) -> None:
    assert await users.update(session, {"name": "x"}, id=42) == 0


async def test_update_without_filters_is_refused(session: AsyncSession) -> None:
    await make_user(session)
    with pytest.raises(ValueError, match="every row"):
        await users.update(session, {"is_active": False})


async def test_delete_user(session: AsyncSession) -> None:
    user = await make_user(session)
    assert await users.delete(session, id=user.id) == 1
    assert await users.count(session) == 0


async def test_delete_without_filters_is_refused(session: AsyncSession) -> None:
    with pytest.raises(ValueError, match="every row"):
        await users.delete(session)


async def test_exists(session: AsyncSession) -> None:
    await make_user(session)
    assert await users.exists(session, name="alice")
    assert not await users.exists(session, name="bob")


async def test_count_with_filters(session: AsyncSession) -> None:
    for name in ("ann", "anna", "bob"):
        await make_user(session, name)
    await users.update(session, {"is_active": False}, name="bob")
    assert await users.count(session) == 3
    assert await users.count(session, is_active=True) == 2
    assert await users.count(session, name__startswith="ann") == 2


# -- filters, sorting, pagination ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"price_cents__gt": 300}, ["SKU-4", "SKU-5"]),
        ({"price_cents__gte": 300}, ["SKU-3", "SKU-4", "SKU-5"]),
        ({"price_cents__lt": 200}, ["SKU-1"]),
        ({"price_cents__lte": 200}, ["SKU-1", "SKU-2"]),
        ({"price_cents__ne": 300}, ["SKU-1", "SKU-2", "SKU-4", "SKU-5"]),
        ({"sku__in": ["SKU-2", "SKU-5", "SKU-9"]}, ["SKU-2", "SKU-5"]),
        ({"sku__not_in": ["SKU-1", "SKU-2"]}, ["SKU-3", "SKU-4", "SKU-5"]),
        ({"name__like": "product _"}, ["SKU-1", "SKU-2", "SKU-3", "SKU-4", "SKU-5"]),
        ({"name__ilike": "PRODUCT 3"}, ["SKU-3"]),
        ({"sku__startswith": "SKU-4"}, ["SKU-4"]),
        ({"category_id": 2, "price_cents__lt": 400}, ["SKU-1", "SKU-3"]),
    ],
)
async def test_filter_operators(session: AsyncSession, filters: dict[str, Any], expected: list[str]) -> None:
    await make_products(session, 100, 200, 300, 400, 500)
    page = await products.get_multi(session, **filters)
    assert [p.sku for p in page["data"]] == expected
    assert page["total_count"] == len(expected)


async def test_filter_is_none(session: AsyncSession) -> None:
    await make_products(session, 100, 200)
    session.add(Product(sku="LOOSE", name="no category", price_cents=1))
    await session.commit()
    assert [p.sku for p in (await products.get_multi(session, category_id__is=None))["data"]] == ["LOOSE"]


async def test_unknown_filter_operator_raises(session: AsyncSession) -> None:
    with pytest.raises(ValueError, match="unknown filter operator 'between'"):
        await products.get_multi(session, price_cents__between=(1, 2))


async def test_unknown_column_raises(session: AsyncSession) -> None:
    with pytest.raises(ValueError, match="no column 'colour'"):
        await products.count(session, colour="red")


@pytest.mark.parametrize(
    ("page", "per_page", "expected", "has_more"),
    [(1, 3, [1, 2, 3], True), (2, 3, [4, 5, 6], True), (3, 3, [7], False), (4, 3, [], False)],
)
async def test_pagination(
    session: AsyncSession, page: int, per_page: int, expected: list[int], has_more: bool
) -> None:
    await make_products(session, *range(100, 800, 100))
    data = await products.get_multi(session, offset=compute_offset(page, per_page), limit=per_page)
    response = paginated_response(data, page, per_page)
    assert [p.id for p in response["data"]] == expected
    assert response["total_count"] == 7
    assert response["has_more"] is has_more


async def test_compute_offset_rejects_page_zero(session: AsyncSession) -> None:
    with pytest.raises(ValueError, match="start at 1"):
        compute_offset(0, 10)


@pytest.mark.parametrize(
    ("columns", "orders", "expected"),
    [
        ("price_cents", "asc", ["SKU-2", "SKU-3", "SKU-1", "SKU-4"]),
        ("price_cents", "desc", ["SKU-4", "SKU-1", "SKU-3", "SKU-2"]),
        (["category_id", "price_cents"], ["asc", "desc"], ["SKU-4", "SKU-2", "SKU-1", "SKU-3"]),
        (["category_id", "sku"], ["desc", "asc"], ["SKU-1", "SKU-3", "SKU-2", "SKU-4"]),
    ],
)
async def test_sorting(session: AsyncSession, columns: Any, orders: Any, expected: list[str]) -> None:
    await make_products(session, 300, 100, 200, 400)
    page = await products.get_multi(session, sort_columns=columns, sort_orders=orders)
    assert [p.sku for p in page["data"]] == expected


async def test_sort_orders_must_match_columns(session: AsyncSession) -> None:
    with pytest.raises(ValueError, match="must match"):
        await products.get_multi(session, sort_columns=["id", "sku"], sort_orders=["asc"])


async def test_bad_sort_order_raises(session: AsyncSession) -> None:
    with pytest.raises(ValueError, match="'asc' or 'desc'"):
        await products.get_multi(session, sort_orders="up")


async def test_negative_offset_raises(session: AsyncSession) -> None:
    with pytest.raises(ValueError, match=">= 0"):
        await products.get_multi(session, offset=-1)


async def test_total_count_ignores_limit(session: AsyncSession) -> None:
    await make_products(session, *range(1, 26))
    page = await products.get_multi(session, limit=10, price_cents__gt=5)
    assert len(page["data"]) == 10
    assert page["total_count"] == 20


# -- joins --------------------------------------------------------------------------------------


async def test_get_joined_products_with_category(session: AsyncSession) -> None:
    await make_products(session, 100, 200)
    session.add(Product(sku="LOOSE", name="no category", price_cents=1))
    await session.commit()
    rows = await products.get_joined(session, Category, join_prefix="category_")
    assert [(r["sku"], r["category_name"]) for r in rows] == [
        ("SKU-1", "games"),
        ("SKU-2", "books"),
        ("LOOSE", None),
    ]


async def test_get_joined_inner_drops_unmatched(session: AsyncSession) -> None:
    await make_products(session, 100)
    session.add(Product(sku="LOOSE", name="no category", price_cents=1))
    await session.commit()
    rows = await products.get_joined(session, Category, join_prefix="c_", join_type="inner")
    assert [r["sku"] for r in rows] == ["SKU-1"]
    assert rows[0]["c_parent_id"] is None


async def test_get_joined_with_filters(session: AsyncSession) -> None:
    user = await make_user(session)
    other = await make_user(session, "bob")
    for owner in (user, other, user):
        session.add(Order(user_id=owner.id, total_cents=100 * owner.id))
    await session.commit()
    rows = await orders.get_joined(session, User, join_prefix="user_", user_id=other.id)
    assert [(r["id"], r["user_name"], r["total_cents"]) for r in rows] == [(2, "bob", 200)]


# -- the seed -----------------------------------------------------------------------------------


async def test_seed_categories_are_present(session: AsyncSession) -> None:
    names = (await session.scalars(select(Category.name).order_by(Category.id))).all()
    assert names == ["books", "games", "novels"]


async def test_seed_category_hierarchy(session: AsyncSession) -> None:
    novels = await session.scalar(
        select(Category).where(Category.name == "novels").options(selectinload(Category.parent))
    )
    assert novels is not None and novels.parent is not None and novels.parent.name == "books"
    books = await session.get_one(
        Category, 1, options=[selectinload(Category.children)], populate_existing=True
    )
    assert [c.name for c in books.children] == ["novels"]


async def test_seed_settings_hold_json(session: AsyncSession) -> None:
    shipping = await session.get_one(Setting, "shipping")
    assert shipping.value == {"free_over_cents": 5000, "carriers": ["dhl", "ups"]}
    assert (await session.get_one(Setting, "currency")).value == "EUR"


async def test_seed_tags(session: AsyncSession) -> None:
    assert (await session.scalars(select(Tag.name).order_by(Tag.name))).all() == ["gift", "new", "sale"]


async def test_seeded_category_name_is_unique(session: AsyncSession) -> None:
    session.add(Category(name="books"))
    with pytest.raises(IntegrityError, match=r"UNIQUE constraint failed: categories.name"):
        await session.commit()


async def test_deleting_seed_rows_stays_in_this_test(session: AsyncSession) -> None:
    await session.execute(delete(Category).where(Category.parent_id.is_not(None)))
    await session.execute(delete(Setting))
    await session.commit()
    assert await count(session, Category) == 2
    assert await count(session, Setting) == 0


async def test_changing_a_seed_row_stays_in_this_test(session: AsyncSession) -> None:
    assert await settings.update(session, {"value": "USD"}, key="currency") == 1
    assert (await session.get_one(Setting, "currency", populate_existing=True)).value == "USD"


# -- profiles and addresses: one-to-one, one-to-many, cascades ------------------------------------


async def test_profile_is_one_per_user(session: AsyncSession) -> None:
    user = await make_user(session)
    session.add(Profile(user_id=user.id, bio="first"))
    await session.commit()
    session.add(Profile(user_id=user.id, bio="second"))
    with pytest.raises(IntegrityError, match=r"UNIQUE constraint failed: profiles.user_id"):
        await session.commit()


async def test_profile_deleted_with_user_by_orm_cascade(session: AsyncSession) -> None:
    user = await make_user(session)
    user.profile = Profile(bio="hello")
    await session.commit()
    await session.delete(user)
    await session.commit()
    assert await count(session, Profile) == 0


async def test_profile_deleted_with_user_by_on_delete_cascade(session: AsyncSession) -> None:
    user = await make_user(session)
    session.add(Profile(user_id=user.id))
    await session.commit()
    await session.execute(delete(User).where(User.id == user.id))  # SQL only: the database cascades
    await session.commit()
    assert await count(session, Profile) == 0


async def test_profile_needs_an_existing_user(session: AsyncSession) -> None:
    session.add(Profile(user_id=999))
    with pytest.raises(IntegrityError, match="FOREIGN KEY constraint failed"):
        await session.commit()


async def test_profile_default_bio(session: AsyncSession) -> None:
    user = await make_user(session)
    session.add(Profile(user_id=user.id))
    await session.commit()
    profile = await session.scalar(select(Profile))
    assert profile is not None and profile.bio == "" and profile.avatar_url is None


async def test_addresses_in_insertion_order(session: AsyncSession) -> None:
    user = await make_user(session)
    for city in ("Berlin", "Paris", "Rome"):
        session.add(Address(user_id=user.id, line1="1 Main St", city=city, country="XX"))
    await session.commit()
    assert [a.city for a in await user.awaitable_attrs.addresses] == ["Berlin", "Paris", "Rome"]


async def test_address_removed_from_user_is_deleted(session: AsyncSession) -> None:
    user = await make_user(session)
    (await user.awaitable_attrs.addresses).extend(
        [Address(line1="a", city="A", country="AA"), Address(line1="b", city="B", country="BB")]
    )
    await session.commit()
    (await user.awaitable_attrs.addresses).pop(0)
    await session.commit()
    assert (await session.scalars(select(Address.city))).all() == ["B"]


async def test_addresses_deleted_with_user(session: AsyncSession) -> None:
    user = await make_user(session)
    (await user.awaitable_attrs.addresses).append(Address(line1="a", city="A", country="AA"))
    await make_user(session, "bob")
    await session.commit()
    await session.delete(user)
    await session.commit()
    assert await count(session, Address) == 0
    assert await users.count(session) == 1


async def test_country_code_length_is_not_enforced_by_sqlite(session: AsyncSession) -> None:
    user = await make_user(session)
    session.add(Address(user_id=user.id, line1="a", city="A", country="TOO LONG"))
    await session.commit()  # String(2) is a type hint to SQLite, not a constraint
    assert await session.scalar(select(Address.country)) == "TOO LONG"


# -- products, tags, categories -----------------------------------------------------------------


async def test_price_must_not_be_negative(session: AsyncSession) -> None:
    session.add(Product(sku="X", name="x", price_cents=-1))
    with pytest.raises(IntegrityError, match="ck_products_price_non_negative"):
        await session.commit()


async def test_stock_must_not_be_negative(session: AsyncSession) -> None:
    (product,) = await make_products(session, 100, stock=1)
    product.stock -= 2
    with pytest.raises(IntegrityError, match="ck_products_stock_non_negative"):
        await session.commit()


async def test_sku_is_unique(session: AsyncSession) -> None:
    await make_products(session, 100)
    session.add(Product(sku="SKU-1", name="copy", price_cents=1))
    with pytest.raises(IntegrityError, match=r"UNIQUE constraint failed: products.sku"):
        await session.commit()


async def test_product_category_must_exist(session: AsyncSession) -> None:
    session.add(Product(sku="X", name="x", price_cents=1, category_id=99))
    with pytest.raises(IntegrityError, match="FOREIGN KEY constraint failed"):
        await session.commit()


async def test_product_defaults(session: AsyncSession) -> None:
    product = await products.create(session, sku="D", name="defaults", price_cents=5)
    assert (product.stock, product.is_active, product.category_id) == (0, True, None)


async def test_tags_many_to_many(session: AsyncSession) -> None:
    a, b = await make_products(session, 100, 200)
    new, sale = await session.get_one(Tag, 1), await session.get_one(Tag, 2)
    (await a.awaitable_attrs.tags).extend([new, sale])
    (await b.awaitable_attrs.tags).append(sale)
    await session.commit()
    tagged = (
        await session.scalars(
            select(Product.sku).join(Product.tags).where(Tag.name == "sale").order_by(Product.sku)
        )
    ).all()
    assert tagged == ["SKU-1", "SKU-2"]
    assert [p.sku for p in await sale.awaitable_attrs.products] == ["SKU-1", "SKU-2"]


async def test_tag_links_deleted_with_product(session: AsyncSession) -> None:
    (product,) = await make_products(session, 100)
    await session.execute(product_tags.insert(), [{"product_id": product.id, "tag_id": t} for t in (1, 2, 3)])
    await session.commit()
    await session.execute(delete(Product).where(Product.id == product.id))
    await session.commit()
    assert await session.scalar(select(func.count()).select_from(product_tags)) == 0
    assert await count(session, Tag) == 3


async def test_same_tag_twice_on_a_product_is_refused(session: AsyncSession) -> None:
    (product,) = await make_products(session, 100)
    await session.execute(product_tags.insert(), [{"product_id": product.id, "tag_id": 1}])
    with pytest.raises(IntegrityError, match=r"UNIQUE constraint failed: product_tags"):
        await session.execute(product_tags.insert(), [{"product_id": product.id, "tag_id": 1}])


async def test_category_products(session: AsyncSession) -> None:
    await make_products(session, 100, 200, 300)
    games = await session.get_one(Category, 2, options=[selectinload(Category.products)])
    assert sorted(p.sku for p in games.products) == ["SKU-1", "SKU-3"]


async def test_deactivate_products_of_a_category(session: AsyncSession) -> None:
    await make_products(session, 100, 200, 300)
    assert await products.update(session, {"is_active": False}, category_id=2) == 2
    assert await products.count(session, is_active=True) == 1


async def test_category_in_use_cannot_be_deleted(session: AsyncSession) -> None:
    await make_products(session, 100)
    with pytest.raises(IntegrityError, match="FOREIGN KEY constraint failed"):
        await categories.delete(session, id=2)


# -- orders --------------------------------------------------------------------------------------


async def test_place_order_computes_the_total(session: AsyncSession) -> None:
    user = await make_user(session)
    a, b = await make_products(session, 250, 1000)
    order = await place_order(session, user.id, {a.id: 2, b.id: 1})
    assert order.total_cents == 1500
    assert [(i.product_id, i.quantity, i.unit_price_cents) for i in order.items] == [
        (1, 2, 250),
        (2, 1, 1000),
    ]


async def test_place_order_takes_stock(session: AsyncSession) -> None:
    user = await make_user(session)
    (product,) = await make_products(session, 100, stock=5)
    await place_order(session, user.id, {product.id: 3})
    assert (await session.get_one(Product, product.id, populate_existing=True)).stock == 2


async def test_out_of_stock_order_changes_nothing(session: AsyncSession) -> None:
    user = await make_user(session)
    a, b = await make_products(session, 100, 200, stock=2)
    with pytest.raises(OutOfStockError, match="SKU-2: 2 left, 3 wanted"):
        await place_order(session, user.id, {a.id: 1, b.id: 3})
    stock = (await session.scalars(select(Product.stock).order_by(Product.id))).all()
    assert stock == [2, 2]
    assert await count(session, Order) == 0


async def test_order_for_an_inactive_product_is_refused(session: AsyncSession) -> None:
    user = await make_user(session)
    (product,) = await make_products(session, 100)
    await products.update(session, {"is_active": False}, id=product.id)
    with pytest.raises(OrderError, match="not for sale"):
        await place_order(session, user.id, {product.id: 1})


async def test_empty_order_is_refused(session: AsyncSession) -> None:
    user = await make_user(session)
    with pytest.raises(OrderError, match="at least one line"):
        await place_order(session, user.id, {})


async def test_coupon_discounts_and_counts_uses(session: AsyncSession) -> None:
    user = await make_user(session)
    (product,) = await make_products(session, 1000)
    session.add(Coupon(code="TEN", percent_off=10, max_uses=5))
    await session.commit()
    order = await place_order(session, user.id, {product.id: 3}, coupon_code="TEN")
    assert order.total_cents == 2700
    coupon = await session.scalar(select(Coupon).where(Coupon.code == "TEN"))
    assert coupon is not None and coupon.uses == 1 and order.coupon_id == coupon.id


async def test_used_up_coupon_is_refused(session: AsyncSession) -> None:
    user = await make_user(session)
    (product,) = await make_products(session, 1000)
    session.add(Coupon(code="ONCE", percent_off=50, max_uses=1))
    await session.commit()
    await place_order(session, user.id, {product.id: 1}, coupon_code="ONCE")
    with pytest.raises(CouponError, match="used up"):
        await place_order(session, user.id, {product.id: 1}, coupon_code="ONCE")
    assert await count(session, Order) == 1


async def test_unknown_coupon_is_refused(session: AsyncSession) -> None:
    user = await make_user(session)
    (product,) = await make_products(session, 1000)
    with pytest.raises(CouponError, match="unknown coupon 'NOPE'"):
        await place_order(session, user.id, {product.id: 1}, coupon_code="NOPE")


@pytest.mark.parametrize("percent", [0, 101])
async def test_coupon_percent_range(session: AsyncSession, percent: int) -> None:
    session.add(Coupon(code="BAD", percent_off=percent))
    with pytest.raises(IntegrityError, match="ck_coupons_percent"):
        await session.commit()


async def test_order_item_quantity_must_be_positive(session: AsyncSession) -> None:
    user = await make_user(session)
    (product,) = await make_products(session, 100)
    session.add(
        Order(user_id=user.id, items=[OrderItem(product_id=product.id, quantity=0, unit_price_cents=100)])
    )
    with pytest.raises(IntegrityError, match="ck_order_items_quantity_positive"):
        await session.commit()


async def test_product_once_per_order(session: AsyncSession) -> None:
    user = await make_user(session)
    (product,) = await make_products(session, 100)
    line = {"product_id": product.id, "quantity": 1, "unit_price_cents": 100}
    session.add(Order(user_id=user.id, items=[OrderItem(**line), OrderItem(**line)]))
    with pytest.raises(
        IntegrityError, match=r"UNIQUE constraint failed: order_items.order_id, order_items.product_id"
    ):
        await session.commit()


async def test_order_items_deleted_with_order(session: AsyncSession) -> None:
    user = await make_user(session)
    a, b = await make_products(session, 100, 200)
    order = await place_order(session, user.id, {a.id: 1, b.id: 1})
    await session.delete(order)
    await session.commit()
    assert await count(session, OrderItem) == 0
    assert await count(session, Product) == 2


async def test_order_defaults(session: AsyncSession) -> None:
    user = await make_user(session)
    order = await orders.create(session, user_id=user.id)
    assert (order.status, order.total_cents, order.coupon_id) == ("pending", 0, None)
    assert order.created_at is not None


async def test_orders_by_user_and_status(session: AsyncSession) -> None:
    alice, bob = await make_user(session), await make_user(session, "bob")
    statuses = [("pending", alice), ("paid", alice), ("paid", bob), ("paid", alice)]
    session.add_all(Order(user_id=u.id, status=s) for s, u in statuses)
    await session.commit()
    page = await orders.get_multi(session, user_id=alice.id, status="paid", sort_orders="desc")
    assert [o.id for o in page["data"]] == [4, 2]


async def test_order_needs_an_existing_user(session: AsyncSession) -> None:
    session.add(Order(user_id=12345))
    with pytest.raises(IntegrityError, match="FOREIGN KEY constraint failed"):
        await session.commit()


async def test_user_with_orders_cannot_be_deleted(session: AsyncSession) -> None:
    user = await make_user(session)
    await orders.create(session, user_id=user.id)
    with pytest.raises(IntegrityError, match="FOREIGN KEY constraint failed"):
        await users.delete(session, id=user.id)


async def test_user_orders_relationship(session: AsyncSession) -> None:
    user = await make_user(session)
    for total in (1, 2, 3):
        await orders.create(session, user_id=user.id, total_cents=total)
    loaded = await session.scalar(
        select(User).options(selectinload(User.orders)).execution_options(populate_existing=True)
    )
    assert loaded is not None and [o.total_cents for o in loaded.orders] == [1, 2, 3]


# -- payments and shipping -----------------------------------------------------------------------


async def test_pay_marks_the_order_paid(session: AsyncSession) -> None:
    order = await paid_order(session)
    assert order.status == "paid"
    assert (await session.scalars(select(Payment.amount_cents))).all() == [3000]


async def test_wrong_amount_is_refused(session: AsyncSession) -> None:
    user = await make_user(session)
    (product,) = await make_products(session, 1500)
    order = await place_order(session, user.id, {product.id: 1})
    with pytest.raises(OrderError, match="costs 1500, not 1000"):
        await pay(session, order.id, 1000)


async def test_paying_twice_is_refused(session: AsyncSession) -> None:
    order = await paid_order(session)
    with pytest.raises(OrderError, match="is paid"):
        await pay(session, order.id, 3000)


async def test_payments_deleted_with_order_by_the_database(session: AsyncSession) -> None:
    order = await paid_order(session)
    await session.execute(delete(Order).where(Order.id == order.id))
    await session.commit()
    assert await count(session, Payment) == 0
    assert await count(session, OrderItem) == 0


async def test_ship_a_paid_order(session: AsyncSession) -> None:
    order = await paid_order(session)
    shipment = await ship(session, order.id, carrier="dhl", tracking_number="TRK-1")
    await session.refresh(shipment)
    assert shipment.shipped_at is not None
    assert (await session.get_one(Order, order.id)).status == "shipped"


async def test_unpaid_order_cannot_ship(session: AsyncSession) -> None:
    user = await make_user(session)
    (product,) = await make_products(session, 100)
    order = await place_order(session, user.id, {product.id: 1})
    with pytest.raises(OrderError, match="pending, not paid"):
        await ship(session, order.id, carrier="dhl", tracking_number="TRK-1")


async def test_tracking_numbers_are_unique(session: AsyncSession) -> None:
    first, second = await paid_order(session), await paid_order_of(session, "bob")
    await ship(session, first.id, carrier="dhl", tracking_number="SAME")
    with pytest.raises(IntegrityError, match=r"UNIQUE constraint failed: shipments.tracking_number"):
        await ship(session, second.id, carrier="ups", tracking_number="SAME")


async def test_one_shipment_per_order(session: AsyncSession) -> None:
    order = await paid_order(session)
    session.add_all([Shipment(order_id=order.id, carrier="dhl"), Shipment(order_id=order.id, carrier="ups")])
    with pytest.raises(IntegrityError, match=r"UNIQUE constraint failed: shipments.order_id"):
        await session.commit()


# -- reviews ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rating", [0, 6])
async def test_rating_out_of_range_is_refused(session: AsyncSession, rating: int) -> None:
    user = await make_user(session)
    (product,) = await make_products(session, 100)
    session.add(Review(product_id=product.id, user_id=user.id, rating=rating))
    with pytest.raises(IntegrityError, match="ck_reviews_rating_range"):
        await session.commit()


async def test_one_review_per_user_and_product(session: AsyncSession) -> None:
    user = await make_user(session)
    (product,) = await make_products(session, 100)
    await reviews.create(session, product_id=product.id, user_id=user.id, rating=4)
    with pytest.raises(IntegrityError, match=r"uq_reviews_product_user|UNIQUE constraint failed: reviews"):
        await reviews.create(session, product_id=product.id, user_id=user.id, rating=5)


async def test_average_rating(session: AsyncSession) -> None:
    (product,) = await make_products(session, 100)
    for i, rating in enumerate((5, 4, 2)):
        user = await make_user(session, f"reviewer{i}")
        await reviews.create(session, product_id=product.id, user_id=user.id, rating=rating)
    assert await average_rating(session, product.id) == pytest.approx(11 / 3)
    assert await average_rating(session, 999) is None


async def test_reviews_deleted_with_product(session: AsyncSession) -> None:
    user = await make_user(session)
    (product,) = await make_products(session, 100)
    await reviews.create(session, product_id=product.id, user_id=user.id, rating=3)
    await session.delete(product)
    await session.commit()
    assert await reviews.count(session) == 0


async def test_reviews_deleted_with_their_author(session: AsyncSession) -> None:
    author, other = await make_user(session), await make_user(session, "bob")
    (product,) = await make_products(session, 100)
    for user in (author, other):
        await reviews.create(session, product_id=product.id, user_id=user.id, rating=3)
    await session.execute(delete(User).where(User.id == author.id))
    await session.commit()
    assert (await session.scalars(select(Review.user_id))).all() == [other.id]


# -- carts --------------------------------------------------------------------------------------


async def test_add_to_cart_creates_the_cart(session: AsyncSession) -> None:
    user = await make_user(session)
    (product,) = await make_products(session, 100)
    cart = await add_to_cart(session, user.id, product.id, 2)
    assert [(i.product_id, i.quantity) for i in await cart.awaitable_attrs.items] == [(product.id, 2)]


async def test_adding_again_adds_quantity(session: AsyncSession) -> None:
    user = await make_user(session)
    (product,) = await make_products(session, 100)
    await add_to_cart(session, user.id, product.id)
    cart = await add_to_cart(session, user.id, product.id, 4)
    await session.refresh(cart, ["items"])
    assert [i.quantity for i in cart.items] == [5]


async def test_one_cart_per_user(session: AsyncSession) -> None:
    user = await make_user(session)
    session.add_all([Cart(user_id=user.id), Cart(user_id=user.id)])
    with pytest.raises(IntegrityError, match=r"UNIQUE constraint failed: carts.user_id"):
        await session.commit()


async def test_checkout_empties_the_cart(session: AsyncSession) -> None:
    user = await make_user(session)
    a, b = await make_products(session, 100, 200)
    await add_to_cart(session, user.id, a.id, 2)
    await add_to_cart(session, user.id, b.id)
    order = await checkout(session, user.id)
    assert order.total_cents == 400
    assert await session.scalar(select(func.count()).select_from(Cart)) == 1
    assert await session.scalar(text("select count(*) from cart_items")) == 0


async def test_checkout_without_a_cart_is_refused(session: AsyncSession) -> None:
    user = await make_user(session)
    with pytest.raises(OrderError, match="has no cart"):
        await checkout(session, user.id)


async def test_cart_deleted_with_user_by_the_database(session: AsyncSession) -> None:
    user = await make_user(session)
    (product,) = await make_products(session, 100)
    await add_to_cart(session, user.id, product.id)
    await session.execute(delete(User).where(User.id == user.id))
    await session.commit()
    assert await session.scalar(text("select count(*) from carts")) == 0
    assert await session.scalar(text("select count(*) from cart_items")) == 0


# -- audit log and settings ----------------------------------------------------------------------


async def test_orders_are_audited(session: AsyncSession) -> None:
    user = await make_user(session)
    (product,) = await make_products(session, 100)
    order = await place_order(session, user.id, {product.id: 1})
    entry = await session.scalar(
        select(AuditLog).where(AuditLog.entity == "order", AuditLog.entity_id == order.id)
    )
    assert entry is not None and (entry.actor_id, entry.action) == (user.id, "create")


async def test_audit_actor_is_kept_as_null_when_the_user_goes(session: AsyncSession) -> None:
    user = await make_user(session)
    session.add(AuditLog(actor_id=user.id, action="login", entity="user", entity_id=user.id))
    await session.commit()
    await session.execute(delete(User).where(User.id == user.id))
    await session.commit()
    assert (await session.execute(select(AuditLog.actor_id, AuditLog.action))).all() == [(None, "login")]


async def test_update_a_json_setting(session: AsyncSession) -> None:
    shipping = await session.get_one(Setting, "shipping")
    shipping.value = {**shipping.value, "free_over_cents": 2500}
    await session.commit()
    session.expunge_all()
    assert (await session.get_one(Setting, "shipping")).value["free_over_cents"] == 2500


async def test_setting_keys_are_unique(session: AsyncSession) -> None:
    with pytest.raises(IntegrityError, match=r"UNIQUE constraint failed: settings.key"):
        await session.execute(insert(Setting), [{"key": "currency", "value": "USD"}])


# -- transactions -------------------------------------------------------------------------------


async def test_rollback_discards_what_was_not_committed(session: AsyncSession) -> None:
    await make_user(session)
    session.add(User(email="temp@example.com", name="temp"))
    await session.flush()
    assert await users.count(session) == 2
    await session.rollback()
    assert await users.count(session) == 1


async def test_savepoint_rolls_back_alone(session: AsyncSession) -> None:
    await make_user(session)
    async with session.begin_nested() as savepoint:
        session.add(User(email="nested@example.com", name="nested"))
        await session.flush()
        await savepoint.rollback()
    await session.commit()
    assert (await session.scalars(select(User.name))).all() == ["alice"]


async def test_raw_sql_through_the_session(session: AsyncSession) -> None:
    await session.execute(text("insert into tags (name) values (:n)"), [{"n": "raw1"}, {"n": "raw2"}])
    await session.commit()
    assert await session.scalar(text("select count(*) from tags where name like 'raw%'")) == 2


async def test_schema_has_the_17_tables_and_their_indexes(session: AsyncSession) -> None:
    conn = await session.connection()

    def describe(sync_conn: Any) -> tuple[list[str], list[str]]:
        inspector = inspect(sync_conn)
        return inspector.get_table_names(), [ix["name"] for ix in inspector.get_indexes("orders")]

    tables, order_indexes = await conn.run_sync(describe)
    assert sorted(tables) == sorted(Base.metadata.tables) and len(tables) == 17
    assert "ix_orders_user_status" in order_indexes


async def test_foreign_keys_are_enforced(session: AsyncSession) -> None:
    assert await session.scalar(text("pragma foreign_keys")) == 1


# -- isolation: every test starts from the seed, whatever ran before it --------------------------


@pytest.mark.parametrize("run", range(10))
async def test_each_test_starts_from_the_seed(session: AsyncSession, run: int) -> None:
    for model in (User, Product, Order, Review, Cart, Coupon, Shipment, AuditLog, Payment, Address, Profile):
        assert await count(session, model) == 0, model.__tablename__
    for table, rows in SEED.items():
        assert await session.scalar(select(func.count()).select_from(Base.metadata.tables[table])) == len(
            rows
        )
    assert (await session.get_one(Setting, "currency")).value == "EUR"
    # The same unique values in every run: a row left by another test would collide.
    user = await make_user(session, "same", email="same@example.com")
    (product,) = await make_products(session, 100 + run)
    order = await place_order(session, user.id, {product.id: 1})
    assert (user.id, product.id, order.id) == (1, 1, 1)
    assert await users.count(session) == 1


#: What the suites' modules import: the tests, nothing else.
__all__ = [name for name in dir() if name.startswith("test_")]
