"""The object-store port and its adapters; ``open_object_store`` picks one from the settings."""

from __future__ import annotations

from shared.config import ObjectStoreKind, Settings
from shared.objects.base import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreUnavailable,
    one_chunk,
)

__all__ = [
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreUnavailable",
    "one_chunk",
    "open_object_store",
]


def open_object_store(settings: Settings) -> ObjectStore:
    if settings.object_store is ObjectStoreKind.S3:
        from shared.objects.s3 import S3ObjectStore

        return S3ObjectStore(settings)
    from shared.objects.fs import FileObjectStore

    return FileObjectStore(settings.data_dir / "objects", staging_expiry_seconds=settings.staging_expiry_days * 86400)
