"""Who is asking, as the store knows them now.

An access token carries the role its account had when the token was issued. Every use
case that grants more than a customer's own reads checks the account as it is now, so
that a demoted or disabled member of staff loses their powers at once, not when the
token expires, whichever entry point (HTTP, console, command line) the call came from.
A customer's own reads stay stateless: that is the hot path, and an ended session is
refused by its session id (core/services/sessions.py) without a database read.
"""

from __future__ import annotations

import attrs

from core.domain.errors import AuthenticationRequired, TokenInvalid
from core.domain.users import Actor, User
from core.ports.unit_of_work import UnitOfWork, UnitOfWorkFactory


def actor_as_stored(claimed: Actor, user: User | None) -> Actor:
    """The claimed actor with the role its account has now; TokenInvalid if the account
    is gone or disabled."""
    if user is None or not user.is_active:
        raise TokenInvalid("The account of this token no longer exists or is disabled.")
    return attrs.evolve(claimed, role=user.role)


async def current_actor(uow: UnitOfWorkFactory, actor: Actor) -> Actor:
    """The actor as the store knows them now (anonymous callers and the operator as they are)."""
    if actor.user_id is None:
        return actor
    async with uow(readonly=True) as unit:
        user = await unit.users.get(actor.user_id)
    return actor_as_stored(actor, user)


async def current_actor_in(unit: UnitOfWork, actor: Actor) -> Actor:
    """``current_actor`` read inside the caller's unit of work: for a check that must hold
    at the moment the change is written (role and status changes)."""
    if actor.user_id is None:
        return actor
    return actor_as_stored(actor, await unit.users.get(actor.user_id))


async def for_reading(uow: UnitOfWorkFactory, actor: Actor) -> Actor:
    """The actor for a read: one who claims staff powers is checked against the store (what
    staff see, customers do not); customers and anonymous callers are taken as they are."""
    return await current_actor(uow, actor) if actor.is_staff and actor.user_id is not None else actor


async def signed_in(uow: UnitOfWorkFactory, actor: Actor) -> Actor:
    """A signed-in user (or the operator, or an OAuth client acting as itself, whose status
    was checked when its token was), as they are now: for changes a customer may make."""
    if actor.user_id is None and not actor.is_operator and actor.client_id is None:
        raise AuthenticationRequired()
    return await current_actor(uow, actor)


async def as_staff(uow: UnitOfWorkFactory, actor: Actor) -> Actor:
    """Staff or an admin as they are now, or the operator; raises otherwise."""
    actor = await signed_in(uow, actor)
    actor.require_staff()
    return actor


async def as_admin(uow: UnitOfWorkFactory, actor: Actor) -> Actor:
    """An admin as they are now, or the operator; raises otherwise."""
    actor = await signed_in(uow, actor)
    actor.require_admin()
    return actor
