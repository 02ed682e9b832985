"""The shop's service layer: orders, payments, shipping, carts, reviews (what the tests call)."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from .model import AuditLog, Cart, CartItem, Coupon, Order, OrderItem, Payment, Product, Review, Shipment

__all__ = (
    "CouponError",
    "OrderError",
    "OutOfStockError",
    "add_to_cart",
    "average_rating",
    "checkout",
    "pay",
    "place_order",
    "ship",
)


class OrderError(Exception):
    pass


class OutOfStockError(OrderError):
    pass


class CouponError(OrderError):
    pass


async def place_order(
    db: AsyncSession, user_id: int, lines: Mapping[int, int], *, coupon_code: str | None = None
) -> Order:
    """An order for ``lines`` (product id -> quantity): stock taken, coupon applied, audited.
    All or nothing: on any error nothing is written."""
    if not lines:
        raise OrderError("an order needs at least one line")
    try:
        products = {
            p.id: p for p in await db.scalars(select(Product).where(Product.id.in_(lines)).with_for_update())
        }
        order = Order(user_id=user_id)
        total = 0
        for product_id, quantity in lines.items():
            product = products.get(product_id)
            if product is None or not product.is_active:
                raise OrderError(f"product {product_id} is not for sale")
            if product.stock < quantity:
                raise OutOfStockError(f"{product.sku}: {product.stock} left, {quantity} wanted")
            product.stock -= quantity
            order.items.append(
                OrderItem(product_id=product_id, quantity=quantity, unit_price_cents=product.price_cents)
            )
            total += quantity * product.price_cents
        if coupon_code is not None:
            coupon = await db.scalar(select(Coupon).where(Coupon.code == coupon_code))
            if coupon is None:
                raise CouponError(f"unknown coupon {coupon_code!r}")
            if coupon.max_uses is not None and coupon.uses >= coupon.max_uses:
                raise CouponError(f"coupon {coupon_code!r} is used up")
            coupon.uses += 1
            order.coupon_id = coupon.id
            total = total * (100 - coupon.percent_off) // 100
        order.total_cents = total
        db.add(order)
        await db.flush()
        db.add(AuditLog(actor_id=user_id, action="create", entity="order", entity_id=order.id))
        await db.commit()
    except BaseException:
        await db.rollback()
        raise
    return order


async def pay(db: AsyncSession, order_id: int, amount_cents: int, *, provider: str = "card") -> Payment:
    order = await db.get_one(Order, order_id)
    if order.status != "pending":
        raise OrderError(f"order {order_id} is {order.status}")
    if amount_cents != order.total_cents:
        raise OrderError(f"order {order_id} costs {order.total_cents}, not {amount_cents}")
    payment = Payment(order_id=order_id, amount_cents=amount_cents, provider=provider)
    db.add(payment)
    order.status = "paid"
    await db.commit()
    return payment


async def ship(db: AsyncSession, order_id: int, *, carrier: str, tracking_number: str) -> Shipment:
    order = await db.get_one(Order, order_id)
    if order.status != "paid":
        raise OrderError(f"order {order_id} is {order.status}, not paid")
    shipment = Shipment(
        order_id=order_id, carrier=carrier, tracking_number=tracking_number, shipped_at=func.now()
    )
    db.add(shipment)
    order.status = "shipped"
    await db.commit()
    return shipment


async def add_to_cart(db: AsyncSession, user_id: int, product_id: int, quantity: int = 1) -> Cart:
    cart = await db.scalar(select(Cart).where(Cart.user_id == user_id))
    if cart is None:
        cart = Cart(user_id=user_id)
        db.add(cart)
        await db.flush()
    item = await db.scalar(
        select(CartItem).where(CartItem.cart_id == cart.id, CartItem.product_id == product_id)
    )
    if item is None:
        db.add(CartItem(cart_id=cart.id, product_id=product_id, quantity=quantity))
    else:
        item.quantity += quantity
    await db.commit()
    return cart


async def checkout(db: AsyncSession, user_id: int, *, coupon_code: str | None = None) -> Order:
    cart = await db.scalar(select(Cart).where(Cart.user_id == user_id))
    if cart is None:
        raise OrderError(f"user {user_id} has no cart")
    items = await cart.awaitable_attrs.items
    if not items:
        raise OrderError(f"user {user_id}'s cart is empty")
    lines = {item.product_id: item.quantity for item in items}
    order = await place_order(db, user_id, lines, coupon_code=coupon_code)
    (await cart.awaitable_attrs.items).clear()
    await db.commit()
    return order


async def average_rating(db: AsyncSession, product_id: int) -> float | None:
    value = await db.scalar(select(func.avg(Review.rating)).where(Review.product_id == product_id))
    return None if value is None else float(value)
