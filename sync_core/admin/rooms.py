"""Room discovery (SPEC §6): the tenant's rooms from the places API, and a suggested mailbox
per booking-platform resource."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sync_core.admin.problems import GraphProblem
from sync_core.graph import ErrorKind, GraphError
from sync_core.store.mappings import Mapping

if TYPE_CHECKING:
    from sync_core.services import Services


@dataclass(frozen=True)
class Room:
    address: str
    display_name: str
    capacity: int | None
    building: str | None
    floor: int | None
    room_lists: list[str]
    mapped_to: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "display_name": self.display_name,
            "capacity": self.capacity,
            "building": self.building,
            "floor": self.floor,
            "room_lists": self.room_lists,
            "mapped_to": self.mapped_to,
        }


@dataclass(frozen=True)
class Suggestion:
    resource_id: str
    mailbox: str | None
    display_name: str | None
    match: str  # exact, partial, none
    mapped_mailbox: str | None  # where the resource is mapped now, if it is

    def to_json(self) -> dict[str, Any]:
        return {
            "resource_id": self.resource_id,
            "mailbox": self.mailbox,
            "display_name": self.display_name,
            "match": self.match,
            "mapped_mailbox": self.mapped_mailbox,
        }


@dataclass(frozen=True)
class RoomsReport:
    rooms: list[Room]
    room_lists: list[dict[str, Any]]
    suggestions: list[Suggestion]

    def to_json(self) -> dict[str, Any]:
        return {
            "rooms": [r.to_json() for r in self.rooms],
            "room_lists": self.room_lists,
            "suggestions": [s.to_json() for s in self.suggestions],
        }


PLACES_HINT = (
    "Grant the application permission Place.Read.All (App registrations → API permissions → "
    "Microsoft Graph → Application permissions), then grant admin consent. Mapping by address "
    "works without it."
)


def list_rooms(svc: Services, resource_ids: Iterable[str] = ()) -> RoomsReport:
    """Rooms and room lists from Graph places (every page), each room with the resource it is
    mapped to, and for each given resource id the room whose name or address matches it."""
    mapped = {m.mailbox: m for m in svc.mappings.all()}
    try:
        raw_rooms = list(svc.graph.rooms())
        raw_lists = list(svc.graph.room_lists())
        membership: dict[str, list[str]] = {}
        room_lists: list[dict[str, Any]] = []
        for room_list in raw_lists:
            address = str(room_list.get("emailAddress") or "").lower()
            members = [
                str(r.get("emailAddress") or "").lower() for r in svc.graph.rooms_in(address)
            ]
            for member in members:
                membership.setdefault(member, []).append(address)
            room_lists.append(
                {
                    "address": address,
                    "display_name": room_list.get("displayName") or address,
                    "rooms": members,
                }
            )
    except GraphError as error:
        if error.kind in (ErrorKind.ACCESS_DENIED, ErrorKind.PERMISSION_MISSING):
            raise GraphProblem(
                {
                    "code": error.code,
                    "message": "the app may not read rooms and room lists (Place.Read.All)",
                    "hint": PLACES_HINT,
                }
            ) from None
        raise GraphProblem(error.to_json()) from None
    rooms = []
    for raw in raw_rooms:
        address = str(raw.get("emailAddress") or "").lower()
        if not address:
            continue
        mapping = mapped.get(address)
        rooms.append(
            Room(
                address=address,
                display_name=str(raw.get("displayName") or address),
                capacity=raw.get("capacity"),
                building=raw.get("building"),
                floor=raw.get("floorNumber"),
                room_lists=sorted(membership.get(address, [])),
                mapped_to=mapping.resource_id if mapping else None,
            )
        )
    rooms.sort(key=lambda r: r.address)
    by_resource = {m.resource_id: m for m in mapped.values()}
    suggestions = [
        suggest(resource_id, rooms, by_resource.get(resource_id))
        for resource_id in dict.fromkeys(r.strip() for r in resource_ids if r.strip())
    ]
    return RoomsReport(rooms, room_lists, suggestions)


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _words(text: str) -> set[str]:
    return {w for w in re.split(r"[^a-z0-9]+", text.lower()) if w}


def suggest(resource_id: str, rooms: list[Room], mapping: Mapping | None) -> Suggestion:
    """The room whose address (local part) or display name matches the resource id: exactly
    (ignoring case and punctuation: ``berlin-havel`` ↔ ``berlin.havel@…``, ``Berlin Havel``),
    else partially (every word of the id appears in the room's name or address). Rooms mapped
    to another resource are not suggested."""
    wanted = _squash(resource_id)
    words = _words(resource_id)
    free = [r for r in rooms if r.mapped_to in (None, resource_id)]
    mapped_mailbox = mapping.mailbox if mapping else None
    for room in free:
        if wanted and wanted in (
            _squash(room.address),
            _squash(room.address.split("@")[0]),
            _squash(room.display_name),
        ):
            return Suggestion(resource_id, room.address, room.display_name, "exact", mapped_mailbox)
    partial = [
        room
        for room in free
        if words and words <= (_words(room.display_name) | _words(room.address.split("@")[0]))
    ]
    if len(partial) == 1:
        room = partial[0]
        return Suggestion(resource_id, room.address, room.display_name, "partial", mapped_mailbox)
    return Suggestion(resource_id, None, None, "none", mapped_mailbox)
