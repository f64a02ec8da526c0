# A database schema kept by SQLAlchemy, one of the repository's requirements
# (requirements.txt): the bundle's runtime brings it to the host.
import os

import sqlalchemy
from batou.component import Attribute, Component, UpdateNeeded

# Each migration brings the schema from its index to the next version.
MIGRATIONS = [
    "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
    "ALTER TABLE items ADD COLUMN created TEXT",
]


class Database(Component):
    """An SQLite database at the schema version this deployment wants."""

    path = Attribute(str, default="app.sqlite")
    version = Attribute(int, default=len(MIGRATIONS))

    def configure(self):
        self.path = self.map(self.path)
        assert 0 < self.version <= len(MIGRATIONS), "version must name a known migration"

    def _engine(self):
        return sqlalchemy.create_engine(f"sqlite:///{self.path}")

    def _current(self):
        with self._engine().connect() as connection:
            return connection.exec_driver_sql("PRAGMA user_version").scalar()

    def verify(self):
        if not os.path.exists(self.path):
            raise UpdateNeeded(f"{self.path} does not exist")
        current = self._current()
        if current != self.version:
            raise UpdateNeeded(f"schema version {current}, want {self.version}")

    def update(self):
        with self._engine().begin() as connection:
            current = connection.exec_driver_sql("PRAGMA user_version").scalar()
            for statement in MIGRATIONS[current : self.version]:
                connection.exec_driver_sql(statement)
            connection.exec_driver_sql(f"PRAGMA user_version = {int(self.version)}")
