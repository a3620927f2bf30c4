"""A resident's preferences through GraphQL (care/preferences.py): `Resident.preferences` and the mutation
`setResidentPreferences`, which replaces the whole set (a new version; earlier ones are kept).

Reads go through the per-request DataLoader `Loaders.preferences` (one query for a page of residents);
every read and write asks the policy (`preferences.view`, `preferences.edit`).
"""

from datetime import datetime, time

import strawberry

from care import preferences as care
from compliance.consent import Category
from compliance.policy import Action
from schema.context import YiyangInfo
from schema.ids import encode_id
from schema.resident_access import (
    ResidentNode,
    recorder,
    require_resident_access,
    resident_to_change,
)
from schema.user_errors import USER_ERROR_TYPES, UserError, user_errors

DietKindEnum = strawberry.enum(care.DietKind, name="DietKind")


@strawberry.type(name="Diet")
class DietType:
    kind: DietKindEnum
    taboos: str | None = strawberry.field(description="忌口: what must not be served.")
    dislikes: str | None


@strawberry.type(name="DailyRoutine")
class DailyRoutineType:
    wake_time: time | None
    bed_time: time | None
    naps: bool | None = strawberry.field(description="Takes an afternoon nap; null when not known.")
    bathing: str | None


@strawberry.type(name="ResidentPreferences")
class ResidentPreferencesType:
    """The current set of a resident's preferences (sealed at rest as one document)."""

    id: strawberry.ID
    version: int = strawberry.field(description="1 for the first set; each change adds one.")
    diet: DietType
    routine: DailyRoutineType
    hobbies: list[str]
    religion: str | None
    personality: str | None
    avoid: str | None = strawberry.field(description="What to avoid: topics, triggers.")
    notes: str | None
    recorded_by: str
    recorded_at: datetime

    @classmethod
    def of(cls, row: care.ResidentPreferences, institution_id: int) -> "ResidentPreferencesType":
        given = row.preferences
        return cls(
            id=strawberry.ID(encode_id("ResidentPreferences", institution_id, row.id)),
            version=row.version,
            diet=DietType(kind=given.diet.kind, taboos=given.diet.taboos, dislikes=given.diet.dislikes),
            routine=DailyRoutineType(
                wake_time=given.routine.wake_time,
                bed_time=given.routine.bed_time,
                naps=given.routine.naps,
                bathing=given.routine.bathing,
            ),
            hobbies=list(given.hobbies),
            religion=given.religion,
            personality=given.personality,
            avoid=given.avoid,
            notes=given.notes,
            recorded_by=row.recorded_by,
            recorded_at=row.recorded_at,
        )


async def resident_preferences(root: ResidentNode, info: YiyangInfo) -> ResidentPreferencesType | None:
    """The resident's current preferences; null when none were recorded (null with an error of code GONE
    when the resident's personal data was erased)."""
    await require_resident_access(
        info, Action.PREFERENCES_VIEW, root.institution_id, root.pk, (Category.DAILY_CARE,)
    )
    found = await info.context.loaders.preferences.load(root.pk)
    return None if found is None else ResidentPreferencesType.of(found, root.institution_id)


@strawberry.input
class DietInput:
    kind: DietKindEnum = care.DietKind.NORMAL
    taboos: str | None = None
    dislikes: str | None = None


@strawberry.input
class DailyRoutineInput:
    wake_time: time | None = strawberry.field(default=None, description="Hours and minutes, e.g. 06:30.")
    bed_time: time | None = None
    naps: bool | None = None
    bathing: str | None = strawberry.field(default=None, description="Bathing preference, free text.")


@strawberry.input(description="The whole set: what is left out is cleared in the new version.")
class SetResidentPreferencesInput:
    resident_id: strawberry.ID
    diet: DietInput | None = None
    routine: DailyRoutineInput | None = None
    hobbies: list[str] = strawberry.field(default_factory=list, description="Short words, at most 20.")
    religion: str | None = None
    personality: str | None = None
    avoid: str | None = strawberry.field(default=None, description="What to avoid: topics, triggers.")
    notes: str | None = None

    def to_domain(self) -> care.Preferences:
        diet, routine = self.diet or DietInput(), self.routine or DailyRoutineInput()
        return care.Preferences(
            diet=care.Diet(care.DietKind(diet.kind), diet.taboos, diet.dislikes),
            routine=care.Routine(routine.wake_time, routine.bed_time, routine.naps, routine.bathing),
            hobbies=tuple(self.hobbies),
            religion=self.religion,
            personality=self.personality,
            avoid=self.avoid,
            notes=self.notes,
        )


@strawberry.type
class ResidentPreferencesPayload:
    preferences: ResidentPreferencesType | None
    user_errors: list[UserError]


@strawberry.type
class PreferencesMutations:
    @strawberry.mutation(
        description="Set a resident's preferences: replaces the current set (the previous versions stay)."
    )
    async def set_resident_preferences(
        self, info: YiyangInfo, input: SetResidentPreferencesInput
    ) -> ResidentPreferencesPayload:
        institution_id, pk = await resident_to_change(info, input.resident_id, Action.PREFERENCES_EDIT)
        try:
            row = await care.set_preferences(pk, input.to_domain(), recorded_by=recorder(info))
        except USER_ERROR_TYPES as error:
            return ResidentPreferencesPayload(preferences=None, user_errors=user_errors(info, error))
        return ResidentPreferencesPayload(
            preferences=ResidentPreferencesType.of(row, institution_id), user_errors=[]
        )
