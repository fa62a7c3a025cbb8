"""The document-store port and its adapters; ``open_store`` picks one from the settings."""

from __future__ import annotations

from shared.config import DocStoreKind, Settings
from shared.store.base import (
    ASCENDING,
    DESCENDING,
    Collection,
    Document,
    DocumentStore,
    DuplicateKey,
    Filter,
    Index,
    Session,
    StoreUnavailable,
    WriteConflict,
)

__all__ = [
    "ASCENDING",
    "DESCENDING",
    "Collection",
    "Document",
    "DocumentStore",
    "DuplicateKey",
    "Filter",
    "Index",
    "Session",
    "StoreUnavailable",
    "WriteConflict",
    "open_store",
]


def open_store(settings: Settings, service: str) -> DocumentStore:
    """Each service owns its own database: a SQLite file, or a MongoDB database named for it."""
    if settings.doc_store is DocStoreKind.MONGODB:
        from shared.store.mongo import MongoStore

        if settings.mongodb_url is None:
            raise ValueError("LHCIE_DOC_STORE=mongodb needs LHCIE_MONGODB_URL")
        return MongoStore(settings.mongodb_url.get_secret_value(), database=f"lhcie_{service}")
    from shared.store.sqlite import SqliteStore

    return SqliteStore(settings.service_db_path(service))
