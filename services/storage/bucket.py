"""The bucket layout and ``lhcie storage init``: create or check the bucket and the settings it needs.

Layout: ``staging/<submission_id>`` for intake's uploads, expired by a lifecycle rule if storage never
claims them; ``documents/<custodian>/<document_id>`` for filed documents (UUID ids, so keys cannot
collide), versioned and, where the bucket has object lock, retained per document type.

Init is idempotent and safe to run on every deployment (as a Kubernetes Job before the services). What the
server cannot do is reported as ``unsupported`` rather than failing: MinIO without erasure coding has no
object lock, for instance, and the service then files documents without retention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from services.storage.settings import StorageSettings
from shared.config import ObjectStoreKind, Settings
from shared.objects import ObjectNotFound, ObjectStoreUnavailable, open_object_store
from shared.objects.s3 import S3ObjectStore, error_code, translated

STAGING_PREFIX = "staging/"
DOCUMENTS_PREFIX = "documents/"
STAGING_RULE = "lhcie-staging-expiry"
UPLOADS_RULE = "lhcie-abort-incomplete-uploads"
_UNSUPPORTED = {"NotImplemented", "InvalidRequest", "XNotImplemented", "MethodNotAllowed"}

OK, APPLIED, UNSUPPORTED, SKIPPED, FAILED = "ok", "applied", "unsupported", "skipped", "failed"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str


class _Unsupported(Exception):
    pass


async def _call(method: Any, **kw: Any) -> dict[str, Any]:
    try:
        with translated(""):
            answer: dict[str, Any] = await method(**kw)
            return answer
    except ClientError as exc:
        if error_code(exc) in _UNSUPPORTED:
            raise _Unsupported(error_code(exc)) from None
        raise


async def _missing(method: Any, absent: set[str], **kw: Any) -> dict[str, Any] | None:
    """The configuration ``method`` returns, or None when the bucket has none (an ``absent`` error)."""
    try:
        return await _call(method, **kw)
    except ClientError as exc:
        if error_code(exc) in absent:
            return None
        raise


class BucketSetup:
    def __init__(self, store: S3ObjectStore, settings: Settings, storage: StorageSettings, *, apply: bool) -> None:
        self.s3 = store.client
        self.bucket = store.bucket
        self.settings = settings
        self.storage = storage
        self.apply = apply

    async def run(self) -> list[Check]:
        checks = [await self.bucket_exists()]
        if checks[0].status == FAILED:
            return checks
        for step in (self.versioning, self.encryption, self.object_lock, self.lifecycle, self.public_access):
            try:
                checks.append(await step())
            except _Unsupported as exc:
                checks.append(Check(step.__name__.replace("_", " "), UNSUPPORTED, f"the server answered {exc}"))
            except ClientError as exc:
                checks.append(Check(step.__name__.replace("_", " "), FAILED, f"the server answered {error_code(exc)}"))
        return checks

    async def bucket_exists(self) -> Check:
        try:
            await _call(self.s3.head_bucket, Bucket=self.bucket)
            return Check("bucket", OK, f"{self.bucket} exists")
        except (ObjectNotFound, ObjectStoreUnavailable):
            pass  # a missing bucket answers 404 (or NoSuchBucket): create it below
        except ClientError as exc:
            return Check("bucket", FAILED, f"{self.bucket}: the server answered {error_code(exc)}")
        if not self.apply:
            return Check("bucket", FAILED, f"{self.bucket} does not exist")
        create: dict[str, Any] = {"Bucket": self.bucket}
        if self.settings.s3_region != "us-east-1":
            create["CreateBucketConfiguration"] = {"LocationConstraint": self.settings.s3_region}
        try:
            if self.storage.retention_mode != "off":
                try:
                    # Object lock can be switched on most simply when the bucket is made.
                    await _call(self.s3.create_bucket, ObjectLockEnabledForBucket=True, **create)
                    return Check("bucket", APPLIED, f"{self.bucket} created with object lock")
                except _Unsupported:
                    pass
            await _call(self.s3.create_bucket, **create)
        except ClientError as exc:
            if error_code(exc) != "BucketAlreadyOwnedByYou":  # a retried create that had succeeded
                return Check("bucket", FAILED, f"{self.bucket}: the server answered {error_code(exc)}")
            return Check("bucket", OK, f"{self.bucket} exists")
        return Check("bucket", APPLIED, f"{self.bucket} created")

    async def versioning(self) -> Check:
        found = await _call(self.s3.get_bucket_versioning, Bucket=self.bucket)
        if found.get("Status") == "Enabled":
            return Check("versioning", OK, "enabled")
        if not self.apply:
            return Check("versioning", FAILED, "not enabled")
        await _call(self.s3.put_bucket_versioning, Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})
        return Check("versioning", APPLIED, "enabled")

    async def encryption(self) -> Check:
        wanted: dict[str, str] = {"SSEAlgorithm": self.settings.s3_sse}
        if self.settings.s3_sse == "aws:kms" and self.settings.s3_kms_key_id:
            wanted["KMSMasterKeyID"] = self.settings.s3_kms_key_id
        found = await _missing(
            self.s3.get_bucket_encryption, {"ServerSideEncryptionConfigurationNotFoundError"}, Bucket=self.bucket
        )
        rules = (found or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
        if any(r.get("ApplyServerSideEncryptionByDefault") == wanted for r in rules):
            return Check("default encryption", OK, self.settings.s3_sse)
        if not self.apply:
            return Check("default encryption", FAILED, f"not {self.settings.s3_sse} (writes still request it)")
        await _call(
            self.s3.put_bucket_encryption,
            Bucket=self.bucket,
            ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": wanted}]},
        )
        return Check("default encryption", APPLIED, self.settings.s3_sse)

    async def object_lock(self) -> Check:
        mode = self.storage.retention_mode
        if mode == "off":
            return Check("object lock", SKIPPED, "retention is off (LHCIE_RETENTION_MODE)")
        found = await _missing(
            self.s3.get_object_lock_configuration, {"ObjectLockConfigurationNotFoundError"}, Bucket=self.bucket
        )
        if (found or {}).get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled":
            return Check("object lock", OK, f"enabled; documents retained in {mode} mode")
        if not self.apply:
            return Check("object lock", UNSUPPORTED, "not enabled on this bucket; documents are not retained")
        try:
            await _call(
                self.s3.put_object_lock_configuration,
                Bucket=self.bucket,
                ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"},
            )
        except ClientError as exc:
            return Check(
                "object lock", UNSUPPORTED, f"cannot be enabled ({error_code(exc)}); documents are not retained"
            )
        return Check("object lock", APPLIED, f"enabled; documents retained in {mode} mode")

    async def lifecycle(self) -> Check:
        days = self.settings.staging_expiry_days
        ours = [
            {
                "ID": STAGING_RULE,
                "Filter": {"Prefix": STAGING_PREFIX},
                "Status": "Enabled",
                "Expiration": {"Days": days},
                "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            },
            {
                "ID": UPLOADS_RULE,
                "Filter": {"Prefix": DOCUMENTS_PREFIX},
                "Status": "Enabled",
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            },
        ]
        found = await _missing(
            self.s3.get_bucket_lifecycle_configuration, {"NoSuchLifecycleConfiguration"}, Bucket=self.bucket
        )
        rules = (found or {}).get("Rules", [])
        current = {r.get("ID"): r for r in rules}
        staging = current.get(STAGING_RULE, {})
        if staging.get("Expiration", {}).get("Days") == days and UPLOADS_RULE in current:
            return Check("lifecycle", OK, f"{STAGING_PREFIX} expires after {days} day(s)")
        if not self.apply:
            return Check("lifecycle", FAILED, f"no rule expiring {STAGING_PREFIX}")
        # Keep the operator's own rules; replace only ours.
        others = [r for r in rules if r.get("ID") not in {STAGING_RULE, UPLOADS_RULE}]
        await _call(
            self.s3.put_bucket_lifecycle_configuration,
            Bucket=self.bucket,
            LifecycleConfiguration={"Rules": [*others, *ours]},
        )
        return Check("lifecycle", APPLIED, f"{STAGING_PREFIX} expires after {days} day(s)")

    async def public_access(self) -> Check:
        wanted = {
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        }
        found = await _missing(
            self.s3.get_public_access_block, {"NoSuchPublicAccessBlockConfiguration"}, Bucket=self.bucket
        )
        if (found or {}).get("PublicAccessBlockConfiguration") == wanted:
            return Check("public access block", OK, "all public access blocked")
        if not self.apply:
            return Check("public access block", FAILED, "public access is not blocked")
        await _call(self.s3.put_public_access_block, Bucket=self.bucket, PublicAccessBlockConfiguration=wanted)
        return Check("public access block", APPLIED, "all public access blocked")


async def prepare(settings: Settings, *, apply: bool = True, storage: StorageSettings | None = None) -> list[Check]:
    """Create (``apply``) or only check the bucket and its settings (storage's read here unless given)."""
    if settings.object_store is not ObjectStoreKind.S3:
        return [
            Check(
                "bucket",
                OK,
                f"filesystem object store under {settings.data_dir / 'objects'}: "
                "no encryption, lifecycle or object lock (use S3 in production)",
            )
        ]
    store = open_object_store(settings)
    assert isinstance(store, S3ObjectStore)
    await store.start()
    try:
        return await BucketSetup(store, settings, storage or StorageSettings(), apply=apply).run()
    except ObjectStoreUnavailable as exc:
        return [Check("bucket", FAILED, f"the S3 endpoint is unavailable ({exc})")]
    finally:
        await store.close()


def report(checks: list[Check]) -> tuple[str, int]:
    """The lines to print and the exit status: non-zero when anything failed."""
    lines = [f"{c.status:<12} {c.name}: {c.detail}" for c in checks]
    failed = any(c.status == FAILED for c in checks)
    return "\n".join(lines), 1 if failed else 0
