"""Bulk mapping's pure parts: resource id templates, and when a stored mapping already has the
requested values."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from sync_core.admin.bulk import BulkMappings, expand_template, same_values
from sync_core.admin.mappings import MappingInput
from sync_core.problems import ValidationFailed
from sync_core.store.mappings import Mapping
from sync_core.validation import parse_model

MOMENT = datetime(2030, 1, 7, tzinfo=UTC)


def test_templates_take_local_and_address_and_nothing_else() -> None:
    assert expand_template("room-{local}", "berlin.havel@contoso.com") == "room-berlin.havel"
    assert expand_template("{address}/{local}", "a@b.example") == "a@b.example/a"
    for template, says in (
        ("room-{name}", "unknown placeholder {name}"),
        ("room", "must contain a placeholder"),
        ("room-{local", "unmatched"),
        ("room-{local}}", "unmatched"),
    ):
        with pytest.raises(ValidationFailed) as refused:
            parse_model(
                BulkMappings,
                {"rule": {"mailboxes": ["a@b.example"], "resource_id_template": template}},
            )
        assert [e.field for e in refused.value.errors] == ["rule.resource_id_template"]
        assert says in refused.value.errors[0].message


def test_same_values_compares_every_field_of_the_request() -> None:
    stored = Mapping(
        resource_id="room-1",
        mailbox="a@b.example",
        privacy="busy_only",
        enabled=True,
        created_at=MOMENT,
        updated_at=MOMENT,
    )
    assert same_values(parse_model(MappingInput, {"mailbox": "A@b.example"}), stored)
    assert not same_values(parse_model(MappingInput, {"mailbox": "c@b.example"}), stored)
    assert not same_values(
        parse_model(MappingInput, {"mailbox": "a@b.example", "privacy": "full"}), stored
    )
    # A field left out of the request takes its default, so it is compared too.
    assert not same_values(
        parse_model(MappingInput, {"mailbox": "a@b.example"}), replace(stored, enabled=False)
    )
    for name, value in (("direction", "to_outlook"), ("filters", {"ignore_all_day": True})):
        if name in MappingInput.model_fields:
            changed = parse_model(MappingInput, {"mailbox": "a@b.example", name: value})
            assert not same_values(changed, stored)
