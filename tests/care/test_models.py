"""Static checks of the domain models against their columns."""

import pytest
from tortoise.fields.data import CharEnumFieldInstance

from care import models


@pytest.mark.parametrize("model", [models.Resident, models.FamilyMember])
def test_every_enum_value_fits_its_column(model: type) -> None:
    for name, field in model._meta.fields_map.items():
        if isinstance(field, CharEnumFieldInstance):
            too_long = [member.value for member in field.enum_type if len(member.value) > field.max_length]
            assert not too_long, f"{model.__name__}.{name}: {too_long} exceed {field.max_length}"
