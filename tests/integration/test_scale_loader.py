"""The national-size loader (`bench/scale.py load`, issue 21) at a tiny size, on PostgreSQL
(it loads by COPY): what it writes is what the platform reads back (a document opens through
the vault and matches its hash), its audit entries verify, and a stopped load resumes where it
stopped without duplicating anything."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import func, select

from carevault.adapters.storage import schema as t
from carevault.adapters.storage.document_store import sealed_parts
from carevault.adapters.storage.unit_of_work import SqlUnitOfWork
from carevault.services.document_publication import CONTENT
from support.databases import private_database

pytestmark = pytest.mark.postgres

BENCH = Path(__file__).resolve().parents[2] / "bench" / "scale.py"


@pytest.fixture(scope="module")
def scale() -> ModuleType:
    spec = importlib.util.spec_from_file_location("scale_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A database of its own, not migrated: the loader migrates it (`upgrade`)."""
    with private_database("carevault_scale") as url:
        yield url


def _counts(platform: Any) -> dict[str, int]:
    with platform.engine.connect() as connection:
        return {
            table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (t.patient, t.patient_identifier, t.record, t.record_grant,
                          t.encounter, t.document, t.document_metadata, t.document_content,
                          t.submission_set)
        }


def test_a_stopped_load_resumes_and_what_it_loaded_opens(
    scale: ModuleType, empty_database: str, tmp_path: Path
) -> None:
    key = tmp_path / "scale.key"
    first = scale.load(empty_database, patients=50, documents=200, chunk=20,
                       stop_after_chunks=1, quiet=True, key_file=key)
    assert (first.patients, first.documents, first.loaded_now, first.chunks) == (20, 80, 20, 1)

    rest = scale.load(empty_database, patients=50, documents=200, chunk=20, quiet=True,
                      key_file=key)
    assert (rest.patients, rest.documents, rest.loaded_now, rest.chunks) == (50, 200, 30, 2)
    again = scale.load(empty_database, patients=50, documents=200, chunk=20, quiet=True,
                       key_file=key)
    assert (again.loaded_now, again.chunks) == (0, 0)

    platform = scale.platform_for(empty_database, key)
    try:
        counts = _counts(platform)
        assert counts["patient"] == counts["record"] == counts["record_grant"] == 50
        assert counts["encounter"] == 50 and counts["patient_identifier"] >= 50
        assert (counts["document"] == counts["document_metadata"] == counts["document_content"]
                == counts["submission_set"] == 200)
        # One operator entry per chunk, all verified with the rest of the stream.
        assert again.operator_log_verified.startswith("verified ")
        with platform.engine.connect() as connection:
            entries = connection.execute(
                select(t.audit_entry.c.entry).where(t.audit_entry.c.stream == "operator")
            ).scalars().all()
            document_ids = connection.execute(select(t.document.c.id)).scalars().all()
        assert sum(b'"interaction":"bulk load"' in bytes(e) for e in entries) == 3

        # Every document is its own ciphertext, bound to its id: it opens with the platform's
        # keys and matches the hash its metadata declares.
        with SqlUnitOfWork(platform.engine) as uow:
            for document_id in document_ids[:: len(document_ids) // 10]:
                found = uow.documents.get_with_content(document_id)
                assert found is not None
                stored, content = found
                assert content is not None
                parts = sealed_parts(document_id, content, None)
                assert parts is not None
                plain = platform.vault.open(parts, document_id=document_id, version=1,
                                            purpose=CONTENT)
                assert sha256(plain).hexdigest() == stored.metadata.sha256
                assert stored.sealed_text is not None
    finally:
        platform.audit.close()
        platform.engine.dispose()
