"""Field-level encryption of health and identity data (docs/security.md, "Field-level encryption").

Root key (environment) → tenant key (`shared.tenant_key`) → data key per data subject (`data_key` in the
tenant schema) → field ciphertexts (format.py), blind indexes (blind_index.py), crypto-shredding
(`FieldCipher.destroy_data_key`) and online rotation (rotation.py).
"""

from compliance.encryption.blind_index import (
    BLIND_INDEX_BYTES,
    normalize_id_card,
    normalize_phone,
    normalize_text,
)
from compliance.encryption.cipher import FieldCipher, destroy_data_key, field_cipher
from compliance.encryption.format import (
    Algorithm,
    AlgorithmUnavailable,
    CiphertextRejected,
    DataKeyDestroyed,
    FieldEncryptionError,
    KeyUnavailable,
    parse_header,
    sm4_gcm_available,
)
from compliance.encryption.keys import RootKeyring, process_root_keyring, root_keyring_from_environ
from compliance.encryption.rotation import rotate_root_key, rotate_tenant_key

__all__ = [
    "BLIND_INDEX_BYTES",
    "Algorithm",
    "AlgorithmUnavailable",
    "CiphertextRejected",
    "DataKeyDestroyed",
    "FieldCipher",
    "FieldEncryptionError",
    "KeyUnavailable",
    "RootKeyring",
    "destroy_data_key",
    "field_cipher",
    "normalize_id_card",
    "normalize_phone",
    "normalize_text",
    "parse_header",
    "process_root_keyring",
    "root_keyring_from_environ",
    "rotate_root_key",
    "rotate_tenant_key",
    "sm4_gcm_available",
]
