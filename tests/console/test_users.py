"""`u`, the accounts in the console: admins only (the key is refused to staff before any
screen shows), and each change through the use case the API's admin routes call, asked
first, audited with source `console`, its rules (an admin never demotes or disables
themselves, the store keeps an admin) the service's; checked in the store afterwards."""

from __future__ import annotations

import pytest
from textual.widgets import Input

from core.domain.errors import AccountDisabled, DomainError, InvalidCredentials, UserEmailNotFound
from core.domain.users import Actor, Role, UserStatus
from core.ports.repositories import AuditFilter
from core.services.audit import ListAuditEntries
from core.services.auth import LogIn, RefreshSession, UpdateUser
from entrypoints.console.screens.users import UsersScreen
from tests.console.conftest import PASSWORD, Shop, on_every_store, running, signed_in, wait_for
from tests.console.driving import answer, fill, notices, open_area, pressed_and_read, said, select

pytestmark = on_every_store

OPERATOR = Actor.operator()
NEW_PASSWORD = "a new password nobody guesses"


async def audited(shop: Shop, user_id: str, action: str) -> list[tuple[str | None, str | None, dict[str, object]]]:
    """(source, actor, details) of each entry of this action about this account."""
    page = await shop.services.audit.list_entries(
        ListAuditEntries(actor=OPERATOR, filter=AuditFilter(object_id=user_id, action=action))
    )
    return [(entry.source_ip, entry.actor_id, entry.details) for entry in page.items]


async def test_staff_pressing_u_are_refused_and_never_see_the_accounts(shop: Shop) -> None:
    async with running(shop.console()) as pilot:
        app = await signed_in(pilot, "staff@example.com")
        await wait_for(pilot, lambda: app.current_mode == "dashboard", "the dashboard")
        await pilot.press("u")
        await said(pilot, "Only admins can open Users.")
        assert app.current_mode == "dashboard"
        assert not any(isinstance(screen, UsersScreen) for screen in app.screen_stack)


async def test_admins_see_every_account_and_filter_them_by_role_status_and_email(shop: Shop) -> None:
    await shop.create_user("second@example.com", "staff")
    await shop.services.auth.update_user(
        UpdateUser(actor=OPERATOR, user_id=shop.users["second@example.com"], status=UserStatus.DISABLED)
    )
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "admin@example.com")
        screen = await open_area(pilot, "u", UsersScreen)
        assert [screen.row(user)[:3] for user in screen.items] == [
            ("admin@example.com", "admin", "active"),
            ("staff@example.com", "staff", "active"),
            ("customer@example.com", "customer", "active"),
            ("second@example.com", "staff", "disabled"),
        ]

        async def emails(text: str) -> list[str]:
            await pilot.press("slash")
            screen.query_one("#filter", Input).value = text
            await pressed_and_read(pilot, screen, "enter")
            return [user.email for user in screen.items]

        assert await emails("role:staff") == ["staff@example.com", "second@example.com"]
        assert await emails("status:disabled") == ["second@example.com"]
        assert await emails("role:staff status:active") == ["staff@example.com"]
        assert await emails("Customer@Example.com") == ["customer@example.com"]  # normalized as at sign-in
        assert await emails("") == [
            "admin@example.com",
            "staff@example.com",
            "customer@example.com",
            "second@example.com",
        ]
        await pilot.press("slash")
        screen.query_one("#filter", Input).value = "role:boss"
        await pilot.press("enter")
        await said(pilot, "role: is one of customer, staff, admin")


async def test_an_admin_creates_a_staff_account_that_can_sign_in(shop: Shop) -> None:
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "admin@example.com")
        screen = await open_area(pilot, "u", UsersScreen)
        await pilot.press("+")
        await fill(pilot, {"email": "new@example.com", "role": "staff", "password": NEW_PASSWORD})
        assert await answer(pilot) == "Create the staff account new@example.com?"
        await said(pilot, "Created new@example.com (staff)")
        await wait_for(pilot, lambda: "new@example.com" in [u.email for u in screen.items], "the new account listed")
    user = await shop.services.auth.get_user_by_email(OPERATOR, "new@example.com")
    assert (user.role, user.status) == (Role.STAFF, UserStatus.ACTIVE)
    assert await audited(shop, user.id, "user.created") == [
        ("console", shop.users["admin@example.com"], {"role": "staff"})
    ]
    await shop.services.auth.login(LogIn("new@example.com", NEW_PASSWORD, staff_only=True))


async def test_a_password_the_policy_refuses_creates_no_account(shop: Shop) -> None:
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "admin@example.com")
        await open_area(pilot, "u", UsersScreen)
        await pilot.press("+")
        await fill(pilot, {"email": "new@example.com", "role": "staff", "password": "short"})
        await answer(pilot)
        assert "password: must have at least 12 characters" in await said(pilot, "New account: refused")
    with pytest.raises(UserEmailNotFound):
        await shop.services.auth.get_user_by_email(OPERATOR, "new@example.com")


async def test_an_admin_changes_a_role(shop: Shop) -> None:
    staff = shop.users["staff@example.com"]
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "admin@example.com")
        screen = await open_area(pilot, "u", UsersScreen)
        await select(pilot, screen, staff)
        await pilot.press("r")
        await fill(pilot, {"role": "admin"})
        assert await answer(pilot) == "Make staff@example.com admin (now staff)?"
        await said(pilot, "staff@example.com is admin, active")
    assert (await shop.services.auth.get_user(OPERATOR, staff)).role is Role.ADMIN
    assert await audited(shop, staff, "user.role_changed") == [
        ("console", shop.users["admin@example.com"], {"before": "staff", "after": "admin"})
    ]


async def test_an_admin_disables_an_account_which_ends_its_sessions_and_enables_it_again(shop: Shop) -> None:
    staff = shop.users["staff@example.com"]
    session = await shop.services.auth.login(LogIn("staff@example.com", PASSWORD))
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "admin@example.com")
        screen = await open_area(pilot, "u", UsersScreen)
        await select(pilot, screen, staff)
        await pilot.press("s")
        assert await answer(pilot) == "Disable staff@example.com? Their sessions end now."
        await said(pilot, "staff@example.com is staff, disabled")
        assert (await shop.services.auth.get_user(OPERATOR, staff)).status is UserStatus.DISABLED
        with pytest.raises(AccountDisabled):
            await shop.services.auth.login(LogIn("staff@example.com", PASSWORD))
        with pytest.raises(DomainError):
            await shop.services.auth.refresh(RefreshSession(session.refresh_token))
        await wait_for(pilot, lambda: screen.current() is not None and not screen.current().is_active, "disabled")
        await pilot.press("s")
        assert await answer(pilot) == "Enable staff@example.com again? They can sign in."
        await said(pilot, "staff@example.com is staff, active")
    assert (await shop.services.auth.get_user(OPERATOR, staff)).status is UserStatus.ACTIVE
    await shop.services.auth.login(LogIn("staff@example.com", PASSWORD))
    statuses = [details["after"] for source, _, details in await audited(shop, staff, "user.status_changed")]
    assert statuses == ["active", "disabled"]  # newest first


async def test_an_admin_resets_a_password_the_new_one_signs_in_and_old_sessions_end(shop: Shop) -> None:
    staff = shop.users["staff@example.com"]
    session = await shop.services.auth.login(LogIn("staff@example.com", PASSWORD))
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "admin@example.com")
        screen = await open_area(pilot, "u", UsersScreen)
        await select(pilot, screen, staff)
        await pilot.press("P")
        await fill(pilot, {"password": NEW_PASSWORD})
        assert await answer(pilot) == "Reset the password of staff@example.com? Their sessions end now."
        await said(pilot, "The password of staff@example.com was reset")
    with pytest.raises(DomainError):
        await shop.services.auth.refresh(RefreshSession(session.refresh_token))
    with pytest.raises(InvalidCredentials):
        await shop.services.auth.login(LogIn("staff@example.com", PASSWORD))
    await shop.services.auth.login(LogIn("staff@example.com", NEW_PASSWORD))
    assert await audited(shop, staff, "user.password_reset") == [("console", shop.users["admin@example.com"], {})]


async def test_a_reset_not_confirmed_keeps_the_password(shop: Shop) -> None:
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "admin@example.com")
        screen = await open_area(pilot, "u", UsersScreen)
        await select(pilot, screen, shop.users["staff@example.com"])
        await pilot.press("P")
        await fill(pilot, {"password": NEW_PASSWORD})
        await answer(pilot, yes=False)
        await pilot.press("slash")
        await pressed_and_read(pilot, screen, "enter")  # after the answer: whatever it did is done
    await shop.services.auth.login(LogIn("staff@example.com", PASSWORD))


async def test_the_only_admin_cannot_be_demoted_or_disabled_and_the_store_keeps_them(shop: Shop) -> None:
    """In the console the acting admin is always an active admin, so the only admin is the
    one signed in: the service refuses them their own demotion before it counts admins."""
    admin = shop.users["admin@example.com"]
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "admin@example.com")
        screen = await open_area(pilot, "u", UsersScreen)
        await select(pilot, screen, admin)
        await pilot.press("r")
        await fill(pilot, {"role": "staff"})
        await answer(pilot)
        await said(pilot, "Role: refused: You cannot demote or disable your own account.")
        await pilot.press("s")
        await answer(pilot)
        await said(pilot, "Disable: refused: You cannot demote or disable your own account.")
        assert not [n for n in notices(pilot) if "admin@example.com is" in n]
    user = await shop.services.auth.get_user(OPERATOR, admin)
    assert (user.role, user.status) == (Role.ADMIN, UserStatus.ACTIVE)
    assert await audited(shop, admin, "user.role_changed") == []
    assert await audited(shop, admin, "user.status_changed") == []


async def test_an_admin_s_own_password_is_not_reset_here(shop: Shop) -> None:
    async with running(shop.console()) as pilot:
        await signed_in(pilot, "admin@example.com")
        screen = await open_area(pilot, "u", UsersScreen)
        await select(pilot, screen, shop.users["admin@example.com"])
        await pilot.press("P")
        await fill(pilot, {"password": NEW_PASSWORD})
        await answer(pilot)
        await said(pilot, "Change your own password with your current one")
    await shop.services.auth.login(LogIn("admin@example.com", PASSWORD))
