"""`u`, the accounts (admins only: the app refuses the key to staff, and the services refuse
staff whatever the console does): list them by role, status or email, create staff and admin
accounts, change a role, disable and enable, reset a password. Each goes through the use case
the API's admin routes call, so its rules (an admin never demotes or disables themselves, the
store keeps an active admin, a reset ends the user's sessions) are the service's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
from textual.binding import Binding, BindingType

from core.domain.pagination import Page, PageRequest
from core.domain.users import Role, User, UserStatus
from core.ports.repositories import UserFilter
from core.services.auth import CreateUser, ListUsers, ResetPassword, UpdateUser
from entrypoints.console.screens.common import ListScreen, action, confirmed, filled

_ROLES = ", ".join(role.value for role in Role)


def role_named(text: str) -> Role:
    try:
        return Role(text.strip().lower())
    except ValueError:
        raise ValueError(f"role: is one of {_ROLES}") from None


class UsersScreen(ListScreen[User]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("plus", "create", "New", key_display="+"),
        Binding("r", "change_role", "Role"),
        Binding("s", "toggle_status", "On/off"),
        Binding("P", "reset_password", "Password", key_display="P"),
    ]

    TITLE = "Users"  # Screen.__init__ sets `title` from it (a class `title` is overwritten)
    columns = ("email", "role", "status", "created")
    filter_hint = "role:staff status:disabled or an exact email"

    def __init__(self) -> None:
        super().__init__()
        self.user_filter = UserFilter()

    # The list.
    def apply_filter(self, text: str) -> None:
        user_filter = UserFilter()
        for word in text.split():
            name, colon, value = word.partition(":")
            if colon and name.lower() == "role":
                user_filter = attrs.evolve(user_filter, role=role_named(value))
            elif colon and name.lower() == "status":
                try:
                    status = UserStatus(value.lower())
                except ValueError:
                    raise ValueError("status: is active or disabled") from None
                user_filter = attrs.evolve(user_filter, status=status)
            elif "@" in word:
                user_filter = attrs.evolve(user_filter, email=word)  # the service normalizes it
            else:
                raise ValueError(f"{word!r}: filter by role:..., status:... or an exact email")
        super().apply_filter(text)
        self.user_filter = user_filter

    async def fetch(self, page: PageRequest) -> Page[User]:
        auth = self.console.require_services().auth
        return await auth.list_users(ListUsers(actor=self.console.require_actor(), page=page, filter=self.user_filter))

    def row(self, item: User) -> Sequence[Any]:
        return (item.email, item.role.value, item.status.value, item.created_at.strftime("%Y-%m-%d"))

    def key(self, item: User) -> str:
        return item.id

    # Actions.
    def action_create(self) -> None:
        action(self, self._create)

    def action_change_role(self) -> None:
        action(self, self._change_role)

    def action_toggle_status(self) -> None:
        action(self, self._toggle_status)

    def action_reset_password(self) -> None:
        action(self, self._reset_password)

    async def _create(self) -> None:
        values = await filled(
            self,
            "New account",
            [
                ("email", "Email", "", False),
                ("role", f"Role ({_ROLES})", Role.STAFF.value, False),
                ("password", "Password (12 characters or more)", "", True),
            ],
        )
        if values is None:
            return
        try:
            role = role_named(values["role"])
        except ValueError as problem:
            self.notify(str(problem), title="New account: not created", severity="error")
            return
        email = values["email"].strip()
        if not await confirmed(self, f"Create the {role.value} account {email}?"):
            return
        command = CreateUser(actor=self.console.require_actor(), email=email, password=values["password"], role=role)
        user = await self.console.attempt(
            lambda: self.console.require_services().auth.create_user(command), doing="New account"
        )
        if user is not None:
            self.notify(f"Created {user.email} ({user.role.value}).")
            self.reload()

    async def _chosen(self) -> User | None:
        """The account under the cursor as the store has it now (the list may be a moment old:
        what is asked, "disable" or "enable", is about the account as it is)."""
        item = self.current()
        if item is None:
            self.app.bell()
            return None
        actor = self.console.require_actor()
        return await self.console.attempt(
            lambda: self.console.require_services().auth.get_user(actor, item.id), doing="Reading"
        )

    async def _change_role(self) -> None:
        user = await self._chosen()
        if user is None:
            return
        values = await filled(self, f"Role of {user.email}", [("role", f"Role ({_ROLES})", user.role.value, False)])
        if values is None:
            return
        try:
            role = role_named(values["role"])
        except ValueError as problem:
            self.notify(str(problem), title="Role: not changed", severity="error")
            return
        if role is user.role:
            self.notify(f"{user.email} is already {role.value}.")
            return
        if not await confirmed(self, f"Make {user.email} {role.value} (now {user.role.value})?"):
            return
        await self._update(UpdateUser(actor=self.console.require_actor(), user_id=user.id, role=role), doing="Role")

    async def _toggle_status(self) -> None:
        user = await self._chosen()
        if user is None:
            return
        if user.is_active:
            status, question = UserStatus.DISABLED, f"Disable {user.email}? Their sessions end now."
        else:
            status, question = UserStatus.ACTIVE, f"Enable {user.email} again? They can sign in."
        if not await confirmed(self, question):
            return
        command = UpdateUser(actor=self.console.require_actor(), user_id=user.id, status=status)
        await self._update(command, doing="Disable" if status is UserStatus.DISABLED else "Enable")

    async def _update(self, command: UpdateUser, *, doing: str) -> None:
        user = await self.console.attempt(
            lambda: self.console.require_services().auth.update_user(command), doing=doing
        )
        if user is not None:
            self.notify(f"{user.email} is {user.role.value}, {user.status.value}.")
            self.reload()

    async def _reset_password(self) -> None:
        user = await self._chosen()
        if user is None:
            return
        values = await filled(
            self, f"New password for {user.email}", [("password", "New password (12 or more)", "", True)]
        )
        if values is None:
            return
        if not await confirmed(self, f"Reset the password of {user.email}? Their sessions end now."):
            return
        command = ResetPassword(actor=self.console.require_actor(), user_id=user.id, new_password=values["password"])
        changed = await self.console.attempt(
            lambda: self.console.require_services().auth.reset_password(command), doing="Password"
        )
        if changed is not None:
            self.notify(f"The password of {changed.email} was reset; their sessions have ended.")
