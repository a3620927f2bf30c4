"""Field-level encryption on real PostgreSQL: round trip, binding to row/column/subject/tenant, tampering,
SM4-GCM, blind indexes, crypto-shredding, online rotation of tenant and root keys, no key in the clear."""

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from api.settings import REPO_ROOT, Settings
from compliance.audit.checkpoints import AuditKeys, public_keys
from compliance.encryption import (
    BLIND_INDEX_BYTES,
    Algorithm,
    AlgorithmUnavailable,
    CiphertextRejected,
    DataKeyDestroyed,
    FieldCipher,
    KeyUnavailable,
    RootKeyring,
    field_cipher,
    normalize_id_card,
    normalize_phone,
    parse_header,
    process_root_keyring,
    rotate_root_key,
    rotate_tenant_key,
)
from compliance.encryption import format as field_format
from compliance.encryption.format import OVERHEAD
from compliance.encryption.keys import root_key_id
from compliance.encryption.rotation import tenant_keys_not_under
from compliance.identity.keys import RootKeyError, SigningKeys
from compliance.identity.totp import STEP_SECONDS, verify_code
from tenants.context import OutsideTenantScope
from tenants.db import asyncpg_dsn
from tenants.models import Institution
from tenants.registry import tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.conftest import ManualClock, World
from tests.identity.test_totp import code_at, enrolled

T = TypeVar("T")
FIELD = {"table": "resident", "column": "id_card"}


async def in_tenant(institution_id: int, work: Callable[[], Awaitable[T]]) -> T:
    institution = await Institution.get(id=institution_id)
    return await run_in_tenant(tenant_ref(institution), work)


async def seal(institution_id: int, value: str, *, row_id: int, subject_id: int, **where: str) -> bytes:
    async def work() -> bytes:
        return await (await field_cipher()).encrypt(
            value, row_id=row_id, subject_id=subject_id, **(FIELD | where)
        )

    return await in_tenant(institution_id, work)


async def open_text(institution_id: int, sealed: bytes, *, row_id: int, subject_id: int, **where: str) -> str:
    async def work() -> str:
        cipher = await field_cipher()
        return await cipher.decrypt_text(sealed, row_id=row_id, subject_id=subject_id, **(FIELD | where))

    return await in_tenant(institution_id, work)


async def test_round_trip_and_self_describing_format(app: object, world: World) -> None:
    institution = world.institution_ids[0]
    sealed = await seal(institution, "110105194912310021", row_id=1, subject_id=1)
    assert isinstance(sealed, bytes) and len(sealed) == len(b"110105194912310021") + OVERHEAD
    header = parse_header(sealed)
    assert (header.format_version, header.algorithm, header.key_version) == (1, Algorithm.AES_256_GCM, 1)
    assert b"110105194912310021" not in sealed
    # Read in another unit of work: the data key comes from the database.
    assert await open_text(institution, sealed, row_id=1, subject_id=1) == "110105194912310021"

    async def binary_and_text() -> None:
        cipher = await field_cipher()
        assert await field_cipher() is cipher  # one cipher per unit of work
        raw = bytes(range(256))
        again = await cipher.encrypt(raw, table="report", column="pdf", row_id="r-7", subject_id=1)
        assert await cipher.decrypt(again, table="report", column="pdf", row_id="r-7", subject_id=1) == raw
        chinese = await cipher.encrypt(
            "青霉素过敏", table="resident", column="allergies", row_id=1, subject_id=1
        )
        text = await cipher.decrypt_text(
            chinese, table="resident", column="allergies", row_id=1, subject_id=1
        )
        assert text == "青霉素过敏"
        # Two seals of one value differ (fresh nonce).
        assert await cipher.encrypt("x", row_id=1, subject_id=1, **FIELD) != await cipher.encrypt(
            "x", row_id=1, subject_id=1, **FIELD
        )

    await in_tenant(institution, binary_and_text)


async def test_a_ciphertext_copied_elsewhere_does_not_open(app: object, world: World) -> None:
    first, second = world.institution_ids[0], world.institution_ids[1]
    sealed = await seal(first, "13800138000", row_id=11, subject_id=11, column="phone")
    await seal(first, "someone else", row_id=12, subject_id=12, column="phone")  # subject 12 has a key

    elsewhere = [
        (first, {"row_id": 12, "subject_id": 11, "column": "phone"}),  # another row
        (first, {"row_id": 11, "subject_id": 11, "column": "name"}),  # another column
        (first, {"row_id": 11, "subject_id": 11, "column": "phone", "table": "family_member"}),  # table
        (first, {"row_id": 11, "subject_id": 12, "column": "phone"}),  # another subject, with a key
        (first, {"row_id": 11, "subject_id": 99_999, "column": "phone"}),  # a subject without a key
        (second, {"row_id": 11, "subject_id": 11, "column": "phone"}),  # the same ids in another tenant
    ]
    await seal(second, "their own", row_id=11, subject_id=11, column="phone")  # subject 11 there has a key
    for institution, where in elsewhere:
        with pytest.raises(CiphertextRejected):
            await open_text(institution, sealed, **where)
    assert await open_text(first, sealed, row_id=11, subject_id=11, column="phone") == "13800138000"


async def test_tampered_ciphertexts_are_rejected(app: object, world: World) -> None:
    institution = world.institution_ids[0]
    sealed = await seal(institution, "血压 150/95", row_id=21, subject_id=21)

    def flipped(at: int, value: int | None = None) -> bytes:
        changed = bytearray(sealed)
        changed[at] = changed[at] ^ 0x01 if value is None else value
        return bytes(changed)

    tampered = [
        flipped(0),  # format version
        flipped(1, 2),  # algorithm: SM4 instead of AES
        flipped(1, 9),  # an unknown algorithm
        flipped(5),  # key version
        flipped(7),  # nonce
        flipped(20),  # ciphertext
        flipped(len(sealed) - 1),  # tag
        sealed[:-1],  # truncated
        sealed[: OVERHEAD - 1],  # shorter than any ciphertext
        sealed + b"\x00",  # extended
    ]
    for bad in tampered:
        with pytest.raises(CiphertextRejected):
            await open_text(institution, bad, row_id=21, subject_id=21)
    assert await open_text(institution, sealed, row_id=21, subject_id=21) == "血压 150/95"


async def institution_without_keys(name: str) -> int:
    """A new institution: the world's have tenant and data keys since admitting a resident seals its
    identity (care/residents.py), and these tests start from an institution without any."""
    from tenants.registry import NewInstitution, provision_institution

    return (await provision_institution(NewInstitution(name=name, region_code="test-east"))).id


async def test_sm4_gcm_known_answer_and_an_institution_that_selects_it(app: object, world: World) -> None:
    # RFC 8998, appendix A.1: the SM4-GCM of the OpenSSL behind `cryptography`.
    encryptor = Cipher(
        algorithms.SM4(bytes.fromhex("0123456789abcdeffedcba9876543210")),
        modes.GCM(bytes.fromhex("00001234567800000000abcd")),
    ).encryptor()
    encryptor.authenticate_additional_data(bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2"))
    plaintext = bytes.fromhex("".join(c * 16 for c in "abcdefea"))
    body = encryptor.update(plaintext) + encryptor.finalize()
    assert body.hex().startswith("17f399f08c67d5ee19d0dc9969c4bb7d")
    assert encryptor.tag.hex() == "83de3541e4c2b58177e065a9bf7b62ec"
    assert field_format.sm4_gcm_available()

    institution = await institution_without_keys("国密测试院")
    rotation = await rotate_tenant_key(institution, algorithm=Algorithm.SM4_GCM)
    assert (rotation.new_version, rotation.algorithm) == (1, Algorithm.SM4_GCM)
    sealed = await seal(institution, "糖尿病", row_id=1, subject_id=1, column="history")
    assert parse_header(sealed).algorithm is Algorithm.SM4_GCM
    assert await open_text(institution, sealed, row_id=1, subject_id=1, column="history") == "糖尿病"
    with pytest.raises(CiphertextRejected):
        await open_text(institution, sealed, row_id=2, subject_id=1, column="history")

    async def stored() -> list[tuple[str, int]]:
        cipher = await field_cipher()
        await cipher.load_data_keys([1])
        return [(key.algorithm.label, len(key.material)) for key in cipher._data_keys.values()]

    assert await in_tenant(institution, stored) == [("sm4-gcm", 16)]


async def test_sm4_refused_clearly_where_openssl_lacks_it(
    app: object, world: World, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(field_format, "sm4_gcm_available", lambda: False)
    institution = await institution_without_keys("无国密测试院")
    with pytest.raises(AlgorithmUnavailable, match="SM4-GCM is not provided"):
        await rotate_tenant_key(institution, algorithm=Algorithm.SM4_GCM)
    conn = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    try:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM shared.tenant_key WHERE institution_id = $1", institution
            )
            == 0
        )
    finally:
        await conn.close()


async def test_blind_indexes(app: object, world: World) -> None:
    first, second = world.institution_ids[0], world.institution_ids[1]

    async def indexes() -> dict[str, bytes]:
        cipher = await field_cipher()
        phone = {"table": "family_member", "column": "phone", "normalize": normalize_phone}
        id_card = {"table": "resident", "column": "id_card", "normalize": normalize_id_card}
        return {
            "phone": await cipher.blind_index("13800138000", **phone),
            "phone spelled": await cipher.blind_index("+86 138-0013-8000", **phone),
            "phone full-width": await cipher.blind_index("１３８００１３８０００", **phone),
            "other phone": await cipher.blind_index("13900139000", **phone),
            "id": await cipher.blind_index("11010519491231002x", **id_card),
            "id spelled": await cipher.blind_index("110105 19491231 002X", **id_card),
            "phone in another column": await cipher.blind_index(
                "13800138000", table="resident", column="phone", normalize=normalize_phone
            ),
        }

    here = await in_tenant(first, indexes)
    there = await in_tenant(second, indexes)
    assert len(here["phone"]) == BLIND_INDEX_BYTES
    assert here["phone"] == here["phone spelled"] == here["phone full-width"]
    assert here["id"] == here["id spelled"]
    assert here["phone"] != here["other phone"]
    assert here["phone"] != here["phone in another column"]
    assert here["phone"] != there["phone"] and here["id"] != there["id"]
    assert await in_tenant(first, indexes) == here  # stable across units of work

    await rotate_tenant_key(first)  # the index secret survives a tenant-key rotation
    assert await in_tenant(first, indexes) == here


async def test_crypto_shredding_erases_one_subject_only(
    app: object, world: World, settings: Settings
) -> None:
    institution = world.institution_ids[4]
    kept = await seal(institution, "keep me", row_id=31, subject_id=31)
    erased = await seal(institution, "forget me", row_id=32, subject_id=32)
    also_erased = await seal(institution, "and me", row_id=33, subject_id=32, column="phone")

    async def destroy() -> int:
        return await (await field_cipher()).destroy_data_key(32)

    assert await in_tenant(institution, destroy) == 1
    with pytest.raises(DataKeyDestroyed):
        await open_text(institution, erased, row_id=32, subject_id=32)
    with pytest.raises(DataKeyDestroyed):
        await open_text(institution, also_erased, row_id=33, subject_id=32, column="phone")
    with pytest.raises(DataKeyDestroyed):  # nothing new is sealed for an erased subject
        await seal(institution, "again", row_id=32, subject_id=32)
    assert await open_text(institution, kept, row_id=31, subject_id=31) == "keep me"

    # A subject erased before it had a key stays erased.
    async def destroy_keyless() -> int:
        return await (await field_cipher()).destroy_data_key(34)

    assert await in_tenant(institution, destroy_keyless) == 0
    with pytest.raises(DataKeyDestroyed):
        await seal(institution, "new", row_id=34, subject_id=34)

    conn = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    try:
        schema = (await Institution.get(id=institution)).schema_name
        rows = await conn.fetch(
            f'SELECT subject_id, wrapped_key, destroyed_at FROM "{schema}".data_key'
            " WHERE subject_id IN (32, 34)"
        )
        assert rows and all(r["wrapped_key"] is None and r["destroyed_at"] is not None for r in rows)
    finally:
        await conn.close()


async def test_a_page_of_subjects_reads_its_keys_in_one_query(app: object, world: World) -> None:
    institution = world.institution_ids[5]
    subjects = list(range(100, 150))

    async def write() -> dict[int, bytes]:
        cipher = await field_cipher()
        await cipher.ensure_data_keys(subjects)
        assert cipher.queries == 3  # their (missing) keys, the tenant key, one INSERT of 50 keys
        return {s: await cipher.encrypt(f"value {s}", row_id=s, subject_id=s, **FIELD) for s in subjects}

    sealed = await in_tenant(institution, write)

    async def read() -> tuple[list[str], int]:
        cipher = await field_cipher()
        await cipher.load_data_keys(subjects)
        values = [await cipher.decrypt_text(sealed[s], row_id=s, subject_id=s, **FIELD) for s in subjects]
        return values, cipher.queries

    values, queries = await in_tenant(institution, read)
    assert values == [f"value {s}" for s in subjects]
    assert queries == 1


async def test_a_cipher_serves_only_its_unit_of_work(app: object, world: World) -> None:
    with pytest.raises(OutsideTenantScope):
        await field_cipher()
    first, second = world.institution_ids[0], world.institution_ids[1]
    kept: list[FieldCipher] = []

    async def make() -> None:
        kept.append(await field_cipher())

    await in_tenant(first, make)

    async def reuse_same_tenant() -> None:
        assert await field_cipher() is not kept[0]
        with pytest.raises(OutsideTenantScope):
            await kept[0].encrypt("x", row_id=1, subject_id=1, **FIELD)

    await in_tenant(first, reuse_same_tenant)

    async def reuse_other_tenant() -> None:
        with pytest.raises(OutsideTenantScope):
            await kept[0].decrypt(b"\x01" * 40, row_id=1, subject_id=1, **FIELD)

    await in_tenant(second, reuse_other_tenant)


async def _use_while_rotating(
    institution: int,
    rotation: Awaitable[object],
    *,
    keyring: RootKeyring | None = None,
    subjects: range,
    rounds: int,
) -> list[tuple[int, int, str, bytes]]:
    """Run `rotation` while units of work write new values (some for subjects without a key yet) and read
    back everything written so far; returns every (row, subject, value, ciphertext) written."""
    written: list[tuple[int, int, str, bytes]] = []  # only what a committed unit of work sealed

    async def seal_some(round_no: int) -> list[tuple[int, int, str, bytes]]:
        cipher = await field_cipher(keyring=keyring)
        sealed = []
        for subject in subjects:
            row = round_no * 1000 + subject
            value = f"{subject}@{round_no}"
            sealed.append(
                (row, subject, value, await cipher.encrypt(value, row_id=row, subject_id=subject, **FIELD))
            )
            await asyncio.sleep(0)
        return sealed

    async def read_all() -> None:
        cipher = await field_cipher(keyring=keyring)
        snapshot = list(written)
        await cipher.load_data_keys({subject for _, subject, _, _ in snapshot})
        for row, subject, value, sealed in snapshot:
            assert await cipher.decrypt_text(sealed, row_id=row, subject_id=subject, **FIELD) == value
            await asyncio.sleep(0)

    async def new_subject(subject: int) -> list[tuple[int, int, str, bytes]]:
        # A subject that appears only now: its data key is created while the rotation runs (and by both
        # traffic loops at once: one creates it, the other waits and reads it).
        cipher = await field_cipher(keyring=keyring)
        value = f"new {subject}"
        return [
            (
                subject,
                subject,
                value,
                await cipher.encrypt(value, row_id=subject, subject_id=subject, **FIELD),
            )
        ]

    async def traffic() -> None:
        for round_no in range(rounds):
            written.extend(await in_tenant(institution, lambda n=round_no: seal_some(n)))
            await in_tenant(institution, read_all)
            written.extend(await in_tenant(institution, lambda n=round_no: new_subject(subjects.stop + n)))

    await asyncio.gather(rotation, traffic(), traffic())
    return written


async def _all_open(
    institution: int, written: list[tuple[int, int, str, bytes]], keyring: RootKeyring
) -> None:
    async def read() -> None:
        cipher = await field_cipher(keyring=keyring)
        await cipher.load_data_keys({subject for _, subject, _, _ in written})
        for row, subject, value, sealed in written:
            assert await cipher.decrypt_text(sealed, row_id=row, subject_id=subject, **FIELD) == value

    await in_tenant(institution, read)


async def test_tenant_key_rotation_while_reads_and_writes_run(
    app: object, world: World, settings: Settings
) -> None:
    institution = world.institution_ids[6]
    subjects = range(200, 212)
    before = [await seal(institution, f"before {s}", row_id=s, subject_id=s) for s in subjects]
    batches: list[int] = []

    async def yield_after(count: int) -> None:
        batches.append(count)
        await asyncio.sleep(0.01)

    rotation_task = asyncio.ensure_future(
        rotate_tenant_key(institution, batch_size=3, after_batch=yield_after)
    )
    written = await _use_while_rotating(institution, rotation_task, subjects=subjects, rounds=4)
    rotation = rotation_task.result()
    assert rotation.new_version == 2 and rotation.versions_retired == [1] and len(batches) >= 4
    assert rotation.data_keys_rewrapped >= len(subjects)

    written += [(s, s, f"before {s}", sealed) for s, sealed in zip(subjects, before, strict=True)]
    await _all_open(institution, written, process_root_keyring())

    conn = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    try:
        schema = (await Institution.get(id=institution)).schema_name
        versions = await conn.fetch(
            f'SELECT DISTINCT tenant_key_version FROM "{schema}".data_key WHERE wrapped_key IS NOT NULL'
        )
        assert [r["tenant_key_version"] for r in versions] == [2]
        old = await conn.fetchrow(
            "SELECT wrapped_key, retired_at FROM shared.tenant_key WHERE institution_id = $1 AND version = 1",
            institution,
        )
        assert old["wrapped_key"] is None and old["retired_at"] is not None
    finally:
        await conn.close()

    # And once more, while the previous rotation's keys are in use.
    again = await rotate_tenant_key(institution, batch_size=5)
    assert again.new_version == 3 and again.versions_retired == [2]
    await _all_open(institution, written, process_root_keyring())


async def test_a_rotation_waits_for_a_writer_that_wrapped_a_key_with_the_old_version(
    app: object, world: World
) -> None:
    institution = await institution_without_keys("轮换等待测试院")
    await seal(institution, "existing", row_id=500, subject_id=500)  # tenant key version 1
    holding, release = asyncio.Event(), asyncio.Event()

    async def slow_writer() -> bytes:
        # A new subject: its data key is wrapped by version 1, which stays locked until this commits.
        sealed = await (await field_cipher()).encrypt("late", row_id=501, subject_id=501, **FIELD)
        holding.set()
        await release.wait()
        return sealed

    writer = asyncio.ensure_future(in_tenant(institution, slow_writer))
    await holding.wait()
    batches: list[int] = []
    batch_done = asyncio.Event()

    async def count(rewrapped: int) -> None:
        batches.append(rewrapped)
        batch_done.set()

    rotation = asyncio.ensure_future(rotate_tenant_key(institution, after_batch=count))
    await batch_done.wait()  # the rotation has made version 2 and re-wrapped what it could see
    await asyncio.sleep(0.05)  # room to reach its last step, where it must wait for the writer
    assert not rotation.done()  # it cannot retire version 1 while the writer may still use it
    release.set()
    sealed = await writer
    done = await rotation
    assert done.versions_retired == [1] and done.data_keys_rewrapped == 2
    assert await open_text(institution, sealed, row_id=501, subject_id=501) == "late"


async def test_root_key_rotation_while_reads_and_writes_run(
    app: object, world: World, clock: ManualClock
) -> None:
    institution = world.institution_ids[7]
    subjects = range(300, 306)
    before = [await seal(institution, f"before {s}", row_id=s, subject_id=s) for s in subjects]
    old = process_root_keyring()
    new_key = os.urandom(32)
    switching = RootKeyring(new_key, (old.primary,))  # YIYANG_ROOT_KEY_NEW alongside YIYANG_ROOT_KEY
    account, enrolment = await enrolled(clock)  # a TOTP secret sealed under the old root key
    await AuditKeys((old.primary,)).signing_key()  # an audit checkpoint key under the old root key too
    audit_keys, refused_before = await public_keys((old.primary,))
    try:
        written = await _use_while_rotating(
            institution,
            rotate_root_key(switching, batch_size=2),
            keyring=switching,
            subjects=subjects,
            rounds=3,
        )
        assert await tenant_keys_not_under(root_key_id(new_key)) == 0
        written += [(s, s, f"before {s}", sealed) for s, sealed in zip(subjects, before, strict=True)]
        await _all_open(institution, written, RootKeyring(new_key))  # the new root key alone
        with pytest.raises(KeyUnavailable):
            await _all_open(institution, written, RootKeyring(old.primary))  # the old one opens nothing
        # What the root key seals directly was sealed again: the new key alone signs and checks codes.
        assert (await SigningKeys(new_key).signing_key()).kid
        with pytest.raises(RootKeyError):
            await SigningKeys(old.primary).signing_key()
        trusted, refused = await public_keys((new_key,))
        # Checkpoints still verify; only what no root key opened before (a forged key row) is refused.
        assert audit_keys and set(audit_keys) <= set(trusted) and set(refused) == set(refused_before)
        clock.now += STEP_SECONDS
        assert await verify_code(account, code_at(enrolment, clock()), clock=clock, root_key=new_key)
        clock.now += STEP_SECONDS
        with pytest.raises(RootKeyError):
            await verify_code(account, code_at(enrolment, clock()), clock=clock, root_key=old.primary)
    finally:
        # Back to the process's root key, for the tests that follow.
        await rotate_root_key(RootKeyring(old.primary, (new_key,)))
    assert await tenant_keys_not_under(old.primary_id) == 0
    await _all_open(institution, written, old)
    assert (await SigningKeys(old.primary).signing_key()).kid


async def test_no_key_material_in_the_clear(app: object, world: World, settings: Settings) -> None:
    first, second = world.institution_ids[0], world.institution_ids[8]
    secrets_seen: list[bytes] = [process_root_keyring().primary]

    async def collect() -> None:
        cipher = await field_cipher()
        await cipher.ensure_data_keys(range(400, 405))
        await cipher.blind_index("13800138000", table="family_member", column="phone")
        secrets_seen.extend(key.material for key in cipher._data_keys.values())
        for tenant_key in cipher._tenant_keys.values():
            secrets_seen.extend([tenant_key.key.material, tenant_key.index_secret])
        secrets_seen.extend(cipher._index_keys.values())

    await in_tenant(first, collect)
    await in_tenant(second, collect)
    assert len(secrets_seen) > 12

    conn = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    try:
        cells: list[bytes] = []
        for row in await conn.fetch("SELECT * FROM shared.tenant_key"):
            cells.extend(_as_bytes(value) for value in row.values())
        for institution in (first, second):
            schema = (await Institution.get(id=institution)).schema_name
            for row in await conn.fetch(f'SELECT * FROM "{schema}".data_key'):
                cells.extend(_as_bytes(value) for value in row.values())
    finally:
        await conn.close()
    for secret in secrets_seen:
        spellings = [secret, secret.hex().encode(), base64.b64encode(secret), secret[:16]]
        assert not any(spelling in cell for cell in cells for spelling in spellings)


def _as_bytes(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    return str(value).encode()


async def test_cli_rotates_a_tenant_key_and_the_root_key(
    app: object, world: World, settings: Settings
) -> None:
    institution = await institution_without_keys("命令行轮换测试院")
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "YIYANG_ENV": "test",
        "YIYANG_ROOT_KEY": base64.b64encode(process_root_keyring().primary).decode(),
    }
    env.pop("YIYANG_ROOT_KEY_NEW", None)

    def yiyang(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "api.cli", "keys", "rotate", *args],
            cwd=REPO_ROOT,
            env=env | extra,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = yiyang("--institution", str(institution), "--algorithm", "sm4-gcm")
    assert done.returncode == 0, done.stderr
    assert f"institution {institution}: tenant key version 1 (sm4-gcm)" in done.stdout
    refused = yiyang("--root")
    assert refused.returncode == 2 and "YIYANG_ROOT_KEY_NEW" in refused.stderr
    missing = yiyang("--institution", "987654321")
    assert missing.returncode == 2

    new_key = base64.b64encode(os.urandom(32)).decode()
    forward = yiyang("--root", YIYANG_ROOT_KEY_NEW=new_key)
    assert forward.returncode == 0 and "under another root key: 0" in forward.stdout, forward.stderr
    back = yiyang("--root", YIYANG_ROOT_KEY=new_key, YIYANG_ROOT_KEY_NEW=env["YIYANG_ROOT_KEY"])
    assert back.returncode == 0 and "under another root key: 0" in back.stdout, back.stderr
