"""The integration registry: every kind names a settings reader and an Integration that exist."""

from __future__ import annotations

import inspect

import pytest

from mediaproxy.config import KINDS, resolve
from mediaproxy.integrations.base import Integration


@pytest.mark.parametrize("name", sorted(KINDS))
def test_a_kind_names_its_reader_and_its_integration(name: str) -> None:
    kind = KINDS[name]
    reader = resolve(kind.settings)
    assert callable(reader) and list(inspect.signature(reader).parameters) == ["table"]
    integration = resolve(kind.integration)
    assert inspect.isclass(integration) and issubclass(integration, Integration)


def test_resolve_names_a_missing_attribute() -> None:
    with pytest.raises(AttributeError):
        resolve("mediaproxy.config:NoSuchThing")
