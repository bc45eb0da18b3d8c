"""`c`, the OAuth clients (admins only: the app refuses the key to staff, and the service
refuses staff whatever the console does): list them by status, open one, register one, edit
its name, redirect URIs, grants and scopes, disable or enable it, and give a confidential one
a new secret. Each goes through ClientService, the use cases the API's admin routes and
`tillbox clients` call, so its rules (exact redirect URIs, https but on loopback, grants a
client's type allows, sessions ended when a client is disabled or loses scopes) are the
service's, and each change is audited under the admin, source `console`.

A secret is shown once, in a dialog of its own that says so, and nowhere else: not in a
notification (they stay on screen and in the app's list of them), not in the log.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, TypeVar, cast

import attrs
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Label, Static

from core.domain.errors import ValidationFailed
from core.domain.oauth import ClientStatus, ClientType, GrantType, OAuthClient
from core.domain.pagination import Page, PageRequest
from core.ports.repositories import OAuthClientFilter
from core.services.clients import ClientWithSecret, ListClients, RegisterClient, UpdateClient
from entrypoints.console.screens.audit import short
from entrypoints.console.screens.common import ConsoleScreen, ListScreen, StoreChanged, action, confirmed, filled
from entrypoints.console.screens.orders import when

T = TypeVar("T")

_TYPES = ", ".join(kind.value for kind in ClientType)
_GRANTS = " ".join(grant.value for grant in GrantType)
#: How the list names the grants, to fit 80 columns (the client's screen names them whole).
GRANT_ABBREVIATIONS = {
    GrantType.AUTHORIZATION_CODE: "code",
    GrantType.REFRESH_TOKEN: "rt",
    GrantType.CLIENT_CREDENTIALS: "cc",
}
_URI_FIELD = re.compile(r"^redirect_uris\[(\d+)\]$")


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def words(text: str) -> tuple[str, ...]:
    """Space-separated values (commas read as spaces: they are in no grant or scope name)."""
    return tuple(text.replace(",", " ").split())


def type_named(text: str) -> ClientType:
    try:
        return ClientType(text.strip().lower())
    except ValueError:
        raise ValueError(f"type: is one of {_TYPES}") from None


def grants_named(text: str) -> tuple[GrantType, ...]:
    names = words(text)
    unknown = [name for name in names if name not in {grant.value for grant in GrantType}]
    if unknown:
        raise ValueError(f"grant types: {', '.join(unknown)} unknown (they are {_GRANTS})")
    return tuple(GrantType(name) for name in names)


def naming_uris(error: ValidationFailed, uris: Sequence[str]) -> ValidationFailed:
    """The service names a wrong redirect URI by its place (``redirect_uris[1]``, as the API
    does); a form holds them in one line, so the notice names the URI too."""
    fields: dict[str, str] = {}
    for field, problem in error.details.get("fields", {}).items():
        match = _URI_FIELD.match(field)
        if match and int(match.group(1)) < len(uris):
            field = f"{field} ({clip(uris[int(match.group(1))], 40)})"
        fields[field] = problem
    return ValidationFailed(fields, error.message)


async def _with_uris_named(work: Awaitable[T], uris: Sequence[str]) -> T:
    try:
        return await work
    except ValidationFailed as error:
        raise naming_uris(error, uris) from None


def describe_client(client: OAuthClient) -> str:
    """A client whole, for its screen (never its secret's digest)."""

    def block(label: str, values: Sequence[str]) -> list[str]:
        text = textwrap.wrap(" ".join(values), width=60, break_on_hyphens=False) or ["-"]
        return [f"{label if n == 0 else '':<15}{line}" for n, line in enumerate(text)]

    lines = [
        f"{'id':<15}{client.id}",
        f"{'name':<15}{client.name}",
        f"{'type':<15}{client.type.value}",
        f"{'status':<15}{client.status.value}",
        "",
    ]
    lines += [f"{'redirect URIs' if n == 0 else '':<15}{uri}" for n, uri in enumerate(client.redirect_uris)]
    lines += block("grant types", [grant.value for grant in client.grant_types])
    lines += block("scopes", client.scopes)
    lines += [
        "",
        f"{'secret made':<15}{when(client.secret_rotated_at) if client.secret_rotated_at else '- (public: no secret)'}",
        f"{'created':<15}{when(client.created_at)} by {client.created_by or 'the operator'}",
        f"{'updated':<15}{when(client.updated_at)}",
    ]
    return "\n".join(lines)


class SecretShown(ModalScreen[None]):
    """A client's new secret, shown this once: Enter on the button (or Escape) closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]
    DEFAULT_CSS = """
    SecretShown { align: center middle; }
    SecretShown > Vertical {
        width: 70; max-width: 100%; height: auto; border: thick $warning; padding: 1 2; background: $surface;
    }
    SecretShown #secret { margin: 1 0; text-style: bold; }
    SecretShown Label { width: 100%; }
    """
    AUTO_FOCUS = None  # see Form

    def __init__(self, client: OAuthClient, secret: str):
        super().__init__()
        self.client = client
        self.secret = secret  # tests read it here: it is nowhere else

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"The client secret of {self.client.name} ({self.client.id}):", markup=False)
            yield Static(self.secret, id="secret", markup=False)
            yield Label(
                "This secret will not be shown again: store it now. Tillbox keeps only a digest of it"
                " (r on the client makes a new one, and the old one stops working).",
                markup=False,
            )
            yield Button("I have stored it", variant="warning", id="stored")

    def on_mount(self) -> None:
        self.set_focus(self.query_one("#stored", Button))

    def action_close(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed)
    def _pressed(self, _: Button.Pressed) -> None:
        self.dismiss(None)


class ClientActions(ConsoleScreen[None]):
    """`s`, `r` and `e` on a client, from the list or the client's screen: each reads the
    client as the store has it now (what is asked is about the client as it is), asks, and
    calls the service as the signed-in admin."""

    def __init__(self) -> None:
        super().__init__()
        self.actions_done = 0  # finished actions, whatever their outcome: tests wait on it

    async def chosen(self) -> OAuthClient | None:
        raise NotImplementedError

    def changed(self) -> None:
        """A change was made: read again what the screen shows."""

    def _act(self, work: Callable[[], Awaitable[None]]) -> None:
        async def counted() -> None:
            try:
                await work()
            finally:
                self.actions_done += 1

        action(self, counted)

    async def _read(self, client_id: str) -> OAuthClient | None:
        console = self.console
        return await console.attempt(
            lambda: console.require_services().clients.get_client(console.require_actor(), client_id), doing="Reading"
        )

    async def _show_secret(self, made: ClientWithSecret) -> None:
        if made.secret is not None:
            await self.app.push_screen_wait(cast(Screen[Any], SecretShown(made.client, made.secret)))

    # Keys.
    def action_toggle_status(self) -> None:
        self._act(self._toggle_status)

    def action_rotate_secret(self) -> None:
        self._act(self._rotate_secret)

    def action_edit(self) -> None:
        self._act(self._edit)

    async def _toggle_status(self) -> None:
        client = await self.chosen()
        if client is None:
            return
        if client.is_active:
            status = ClientStatus.DISABLED
            question = f"Disable {client.name}? It gets no tokens, and its sessions end now."
        else:
            status = ClientStatus.ACTIVE
            question = f"Enable {client.name} again? It can get tokens."
        if not await confirmed(self, question):
            return
        command = UpdateClient(actor=self.console.require_actor(), client_id=client.id, status=status)
        doing = "Disable" if status is ClientStatus.DISABLED else "Enable"
        done = await self.console.attempt(lambda: self.console.require_services().clients.update(command), doing=doing)
        if done is not None:
            self.notify(f"{done.name} is {done.status.value}.")
            self.changed()

    async def _rotate_secret(self) -> None:
        client = await self.chosen()
        if client is None:
            return
        if not client.is_confidential:
            self.notify(f"{client.name} is a public client: it has no secret.", title="Secret", severity="error")
            return
        if not await confirmed(self, f"Make a new secret for {client.name}? The old one stops working now."):
            return
        actor = self.console.require_actor()
        made = await self.console.attempt(
            lambda: self.console.require_services().clients.rotate_secret(actor, client.id), doing="New secret"
        )
        if made is not None:
            self.changed()
            await self._show_secret(made)
            self.notify(f"{made.client.name} has a new secret; the old one no longer works.")

    async def _edit(self) -> None:
        opened = await self.chosen()
        if opened is None:
            return
        values = await filled(
            self,
            f"Edit {opened.name} ({opened.type.value})",
            [
                ("name", "Name", opened.name, False),
                ("redirect_uris", "Redirect URIs (space-separated)", " ".join(opened.redirect_uris), False),
                ("grant_types", f"Grants ({_GRANTS})", " ".join(g.value for g in opened.grant_types), False),
                ("scopes", "Scopes (space-separated)", " ".join(opened.scopes), False),
            ],
        )
        if values is None:
            return
        try:
            grants = grants_named(values["grant_types"])
        except ValueError as problem:
            self.notify(str(problem), title="Edit: not saved", severity="error")
            return
        uris, scopes = tuple(values["redirect_uris"].split()), words(values["scopes"])
        changes: dict[str, Any] = {}
        if values["name"].strip() != opened.name:
            changes["name"] = values["name"]
        if uris != opened.redirect_uris:
            changes["redirect_uris"] = uris
        if set(grants) != set(opened.grant_types):
            changes["grant_types"] = grants
        if set(scopes) != set(opened.scopes):
            changes["scopes"] = scopes
        if not changes:
            self.notify("Nothing was changed.")
            return
        question = f"Save {opened.name}: {', '.join(name.replace('_', ' ') for name in changes)}?"
        if "scopes" in changes and not set(scopes) >= set(opened.scopes):
            question += " Fewer scopes: its sessions end now."
        if not await confirmed(self, question):
            return
        command = UpdateClient(actor=self.console.require_actor(), client_id=opened.id, **changes)
        done = await self.console.attempt(
            lambda: _with_uris_named(self.console.require_services().clients.update(command), uris), doing="Edit"
        )
        if done is not None:
            self.notify(f"Saved {done.name}.")
            self.changed()


class ClientsScreen(ClientActions, ListScreen[OAuthClient]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("plus", "register", "New", key_display="+"),
        Binding("e", "edit", "Edit"),
        Binding("s", "toggle_status", "On/off"),
        Binding("r", "rotate_secret", "New secret"),
    ]

    TITLE = "OAuth clients"  # Screen.__init__ sets `title` from it (a class `title` is overwritten)
    columns = ("id", "name", "type", "status", "grants", "scopes")
    filter_hint = "status:active or status:disabled"

    def __init__(self) -> None:
        super().__init__()
        self.client_filter = OAuthClientFilter()

    # The list.
    def apply_filter(self, text: str) -> None:
        client_filter = OAuthClientFilter()
        for word in text.split():
            name, colon, value = word.partition(":")
            if not (colon and name.lower() == "status"):
                raise ValueError(f"{word!r}: filter by status:active or status:disabled")
            try:
                client_filter = attrs.evolve(client_filter, status=ClientStatus(value.lower()))
            except ValueError:
                raise ValueError("status: is active or disabled") from None
        super().apply_filter(text)
        self.client_filter = client_filter

    async def fetch(self, page: PageRequest) -> Page[OAuthClient]:
        clients = self.console.require_services().clients
        return await clients.list_clients(
            ListClients(actor=self.console.require_actor(), page=page, filter=self.client_filter)
        )

    def row(self, item: OAuthClient) -> Sequence[Any]:
        # 66 characters and the cells' padding: 78 columns (Enter shows the client whole).
        return (
            short(item.id, 11),
            clip(item.name, 14),
            "conf" if item.is_confidential else "public",
            item.status.value,
            " ".join(GRANT_ABBREVIATIONS[grant] for grant in item.grant_types),
            clip(" ".join(item.scopes), 17),
        )

    def key(self, item: OAuthClient) -> str:
        return item.id

    def open_item(self, item: OAuthClient) -> None:
        self.app.push_screen(ClientScreen(item.id))

    # The actions.
    async def chosen(self) -> OAuthClient | None:
        item = self.current()
        if item is None:
            self.app.bell()
            return None
        return await self._read(item.id)

    def changed(self) -> None:
        self.reload()

    def action_register(self) -> None:
        self._act(self._register)

    async def _register(self) -> None:
        values = await filled(
            self,
            "New OAuth client",
            [
                ("name", "Name", "", False),
                ("type", f"Type ({_TYPES})", ClientType.CONFIDENTIAL.value, False),
                ("redirect_uris", "Redirect URIs (space-separated; https, or http on 127.0.0.1)", "", False),
                ("grant_types", f"Grants ({_GRANTS})", "authorization_code refresh_token", False),
                ("scopes", "Scopes (space-separated: catalog:read orders:read ...)", "", False),
            ],
        )
        if values is None:
            return
        try:
            kind = type_named(values["type"])
            grants = grants_named(values["grant_types"])
        except ValueError as problem:
            self.notify(str(problem), title="New client: not registered", severity="error")
            return
        name = values["name"].strip()
        once = " Its secret is shown once." if kind is ClientType.CONFIDENTIAL else ""
        what = f"{name}, a {kind.value} client" if name else f"a {kind.value} client with no name"
        if not await confirmed(self, f"Register {what}?{once}"):
            return
        command = RegisterClient(
            actor=self.console.require_actor(),
            name=values["name"],
            type=kind,
            redirect_uris=tuple(values["redirect_uris"].split()),
            grant_types=grants,
            scopes=words(values["scopes"]),
        )
        made = await self.console.attempt(
            lambda: _with_uris_named(self.console.require_services().clients.register(command), command.redirect_uris),
            doing="New client",
        )
        if made is not None:
            self.reload()
            await self._show_secret(made)
            self.notify(f"Registered {made.client.name} ({made.client.id}).")


class ClientScreen(ClientActions):
    """One client, read again whenever the store changes; `q` goes back to the list."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "edit", "Edit"),
        Binding("s", "toggle_status", "On/off"),
        Binding("r", "rotate_secret", "New secret"),
        Binding("escape", "app.back", "Back", show=False),
    ]
    DEFAULT_CSS = """
    ClientScreen #body { height: 1fr; padding: 0 1; }
    """

    def __init__(self, client_id: str):
        super().__init__()
        self.client_id = client_id
        self.client: OAuthClient | None = None
        self.loads = 0  # completed reads: tests wait on it

    def compose(self) -> ComposeResult:
        yield Static(f"OAuth client {self.client_id}", classes="title", markup=False)
        with VerticalScroll(id="body"):
            yield Static("Reading...", id="detail", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.reload()

    def on_store_changed(self, _: StoreChanged) -> None:
        self.reload()

    def reload(self) -> None:
        self.run_worker(self._load(), group="load", exclusive=True, exit_on_error=False)

    async def _load(self) -> None:
        client = await self._read(self.client_id)
        if client is not None:
            self.client = client
            self.query_one("#detail", Static).update(describe_client(client))
        self.loads += 1

    async def chosen(self) -> OAuthClient | None:
        return await self._read(self.client_id)

    def changed(self) -> None:
        self.reload()
