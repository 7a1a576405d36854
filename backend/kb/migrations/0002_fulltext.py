"""Full-text indexes for passages: an FTS5 table kept by triggers on SQLite, a GIN index on PostgreSQL.

Each half runs only on its own database engine, so one migration history serves both.
"""

from django.db import migrations

SQLITE_CREATE = [
    """CREATE VIRTUAL TABLE kb_passage_fts USING fts5(
        title, heading, text,
        content='kb_passage', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2'
    )""",
    """CREATE TRIGGER kb_passage_fts_insert AFTER INSERT ON kb_passage BEGIN
        INSERT INTO kb_passage_fts(rowid, title, heading, text) VALUES (new.id, new.title, new.heading, new.text);
    END""",
    """CREATE TRIGGER kb_passage_fts_delete AFTER DELETE ON kb_passage BEGIN
        INSERT INTO kb_passage_fts(kb_passage_fts, rowid, title, heading, text)
        VALUES ('delete', old.id, old.title, old.heading, old.text);
    END""",
    """CREATE TRIGGER kb_passage_fts_update AFTER UPDATE OF title, heading, text ON kb_passage BEGIN
        INSERT INTO kb_passage_fts(kb_passage_fts, rowid, title, heading, text)
        VALUES ('delete', old.id, old.title, old.heading, old.text);
        INSERT INTO kb_passage_fts(rowid, title, heading, text) VALUES (new.id, new.title, new.heading, new.text);
    END""",
    # Index whatever passages already exist.
    "INSERT INTO kb_passage_fts(kb_passage_fts) VALUES ('rebuild')",
]

SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS kb_passage_fts_update",
    "DROP TRIGGER IF EXISTS kb_passage_fts_delete",
    "DROP TRIGGER IF EXISTS kb_passage_fts_insert",
    "DROP TABLE IF EXISTS kb_passage_fts",
]

PG_INDEX_NAME = "kb_passage_search_gin"


def pg_index():
    from django.contrib.postgres.indexes import GinIndex

    from backend.kb.search import passage_vector

    return GinIndex(passage_vector(), name=PG_INDEX_NAME)


def create(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "sqlite":
        for statement in SQLITE_CREATE:
            schema_editor.execute(statement)
    elif vendor == "postgresql":
        schema_editor.add_index(apps.get_model("kb", "Passage"), pg_index())


def drop(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "sqlite":
        for statement in SQLITE_DROP:
            schema_editor.execute(statement)
    elif vendor == "postgresql":
        schema_editor.remove_index(apps.get_model("kb", "Passage"), pg_index())


class Migration(migrations.Migration):
    dependencies = [("kb", "0001_initial")]

    operations = [migrations.RunPython(create, drop)]
