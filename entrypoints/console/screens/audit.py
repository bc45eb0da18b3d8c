"""`a`, the audit log (admins): newest first, filtered by who, what and which object, and
each entry opened whole, its details (before and after) pretty-printed.

The filter is words of the form ``key:value``: ``actor:usr_...`` or ``actor:someone@example.com``
(the account with that email), ``action:order.refunded``, ``object:ord_...``, ``type:order``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, Static

from core.domain.audit import AuditEntry
from core.domain.errors import UserNotFound
from core.domain.pagination import Page, PageRequest
from core.ports.repositories import AuditFilter
from core.services.audit import ListAuditEntries
from entrypoints.console.screens.common import ConsoleScreen, ListScreen

#: What each word of the filter may start with, and the AuditFilter field it sets.
FILTER_KEYS = {"actor": "actor_id", "action": "action", "object": "object_id", "type": "object_type"}


def parse_filter(text: str) -> dict[str, str]:
    """The AuditFilter fields a filter's words set; ValueError (said to staff) for any other word."""
    fields: dict[str, str] = {}
    for word in text.split():
        key, colon, value = word.partition(":")
        if not colon or key not in FILTER_KEYS or not value:
            raise ValueError(f"cannot read {word!r}: use actor:, action:, object: or type: and a value")
        fields[FILTER_KEYS[key]] = value
    return fields


def short(text: str, width: int) -> str:
    """Ids keep their kind and their end (the start of ids made together is the same)."""
    if len(text) <= width:
        return text
    if "_" in text[:5] and "@" not in text:
        prefix = text.split("_", 1)[0] + "_"
        return f"{prefix}…{text[-(width - len(prefix) - 1) :]}"
    return text[: width - 1] + "…"


def who(entry: AuditEntry, emails: dict[str, str]) -> str:
    if entry.actor_id is not None:
        return emails.get(entry.actor_id, entry.actor_id)
    if entry.source_ip is None:
        return "tillbox"  # Tillbox itself: a webhook, the expiry sweep
    return "operator" if entry.source_ip == "cli" else "anonymous"


class AuditScreen(ListScreen[AuditEntry]):
    # Textual's Screen.__init__ sets ``title`` from ``TITLE``: both, or the title shows as None.
    TITLE = title = "Audit log (newest first)"
    columns = ("time (UTC)", "actor", "action", "object", "source")
    filter_hint = "actor:usr_… or email  action:order.refunded  object:ord_…  type:order"

    def __init__(self) -> None:
        super().__init__()
        self.filter = AuditFilter()
        self._wanted: dict[str, str] = {}
        self._emails: dict[str, str] = {}  # actor id -> email, as far as read

    def apply_filter(self, text: str) -> None:
        self._wanted = parse_filter(text)
        self.filter_text = text

    async def fetch(self, page: PageRequest) -> Page[AuditEntry]:
        console = self.console
        services = console.require_services()
        actor = console.require_actor()
        wanted = dict(self._wanted)
        if "@" in wanted.get("actor_id", ""):
            wanted["actor_id"] = (await services.auth.get_user_by_email(actor, wanted["actor_id"])).id
        self.filter = AuditFilter(**wanted)
        entries = await services.audit.list_entries(ListAuditEntries(actor=actor, page=page, filter=self.filter))
        for actor_id in {e.actor_id for e in entries.items if e.actor_id is not None} - self._emails.keys():
            try:
                self._emails[actor_id] = (await services.auth.get_user(actor, actor_id)).email
            except UserNotFound:
                self._emails[actor_id] = actor_id
        return entries

    def row(self, item: AuditEntry) -> Sequence[Any]:
        # 68 characters and the cells' padding: 80 columns (Enter shows the entry whole).
        return (
            f"{item.at:%m-%d %H:%M}",
            short(who(item, self._emails), 17),
            short(item.action, 20),
            short(item.object_id or item.object_type, 13),
            short(item.source_ip or "", 7),
        )

    def key(self, item: AuditEntry) -> str:
        return item.id

    def open_item(self, item: AuditEntry) -> None:
        self.app.push_screen(AuditEntryScreen(item, who(item, self._emails)))


def describe_entry(entry: AuditEntry, actor: str) -> str:
    fields = attrs.asdict(entry)
    fields["at"] = entry.at.isoformat()
    details = fields.pop("details")
    lines = [f"{name:<12}{'' if value is None else value}" for name, value in fields.items()]
    if actor != entry.actor_id:
        lines.insert(3, f"{'':<12}({actor})")  # who that is: an email, the operator, Tillbox itself
    lines += ["", "details", json.dumps(details, indent=2, sort_keys=True, ensure_ascii=False, default=str)]
    return "\n".join(lines)


class AuditEntryScreen(ConsoleScreen[None]):
    """One entry, whole: `q` goes back to the list."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.back", "Back", show=False)]

    def __init__(self, entry: AuditEntry, actor: str):
        super().__init__()
        self.entry = entry
        self.actor = actor

    def compose(self) -> ComposeResult:
        yield Static(f"Audit entry {self.entry.id}", classes="title")
        with VerticalScroll():
            yield Static(describe_entry(self.entry, self.actor), id="entry", markup=False)
        yield Footer(compact=True)
