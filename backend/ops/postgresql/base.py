"""Django's PostgreSQL backend, with the health check skipped for a connection in steady use.

With CONN_HEALTH_CHECKS, Django checks a persistent connection with a `SELECT 1` round trip before the
first query of every request, and channels' database_sync_to_async makes every trip to a worker thread a
request: a chat reply made three such trips, so three round trips that found nothing
(docs/benchmarks.md). A connection that came back from a trip without errors less than STEADY_SECONDS
ago is taken as healthy. One whose query failed is checked and closed by Django as before
(errors_occurred), and one idle for longer is checked as before, so a database restart still heals by
itself: at worst, each worker thread whose connection broke within that second answers one message with
`unavailable`, as it would had the restart come a moment later.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db.backends.postgresql import base
from django.db.backends.utils import CursorWrapper
from django.utils.asyncio import async_unsafe

STEADY_SECONDS = 1.0


class DatabaseOperations(base.DatabaseOperations):
    def last_executed_query(self, cursor: object, sql: str, params: object) -> str | None:
        # A prepared_cursor binds on the server, and psycopg keeps no text of the query with its values:
        # without this, DEBUG's query log and the tests' query captures would record None for it.
        return super().last_executed_query(cursor, sql, params) or sql


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
    steady_until = float("-inf")

    def close_if_unusable_or_obsolete(self) -> None:
        # Called at both ends of each request: health_check_done then says whether this one used the
        # connection (Django sets it when it checks or opens one, and resets it here).
        used = self.connection is not None and self.health_check_done and not self.errors_occurred
        super().close_if_unusable_or_obsolete()
        if used and self.connection is not None:
            self.steady_until = time.monotonic() + STEADY_SECONDS

    def close_if_health_check_failed(self) -> None:
        if self.connection is not None and time.monotonic() < self.steady_until:
            self.health_check_done = True
            return
        super().close_if_health_check_failed()

    @async_unsafe
    def prepared_cursor(self) -> CursorWrapper:
        """A cursor that binds parameters on the server, so that a query run often is prepared.

        psycopg prepares a statement after DATABASE_PREPARE_AFTER runs on a connection, and
        PostgreSQL then plans it once, not on every run. For the history read before each provider
        call, planning took longer than running (docs/benchmarks.md). Django's own queries keep binding
        on the client, which works for every query the ORM writes.
        """
        if not settings.DATABASE_PREPARE_AFTER:
            return self.cursor()
        self.close_if_health_check_failed()
        self.ensure_connection()
        # Only server-binding cursors prepare, and only this method makes them: Django's queries are not
        # affected by the connection's threshold.
        self.connection.prepare_threshold = settings.DATABASE_PREPARE_AFTER
        with self.wrap_database_errors:
            return self._prepare_cursor(base.ServerBindingCursor(self.connection))
