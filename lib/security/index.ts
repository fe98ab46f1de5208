/**
 * `tributary/security`: who may do what (API keys and roles), what was done (the audit
 * log), the keys that protect data (keyrings, per-subject keys for crypto-shredding) and
 * dead letters kept without plaintext. The operators that use them (`encrypt`, `decrypt`,
 * `tokenize`, `mask`) are in the package root.
 */
export { AccessControl, bearerToken, presentedKey, type AccessControlOptions, type AccessDecision, type ApiKeyRecord, type IssuedKey, type Permission } from './access';
export { AuditLog, auditAccess, type AuditEvent, type AuditEventType, type AuditLogOptions, type AuditRow } from './audit';
export { deadLetterProtector, type DeadLetterProtectorOptions } from './deadLetterProtector';
export { Keyring, type KeyMaterial, type KeyProvider, type KeyRotation, type KeyringSpec } from './keyring';
export { MemorySubjectKeyStore, SubjectKeys, type SubjectKey, type SubjectKeyRecord, type SubjectKeyStore, type SubjectKeysOptions } from './subjectKeys';
