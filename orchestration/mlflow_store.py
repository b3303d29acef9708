"""The MLflow environment: the local tracking store (SQLite under the state dir), created or
migrated once; the credentials and quiet settings every MLflow client here starts with; the
registry's alias names.

MLflow creates and migrates its schema when a client first opens the store; two processes
doing that at once on one SQLite file break each other. ``ensure`` does it under
``flywheel.stores.prepare`` (one process, the others wait), migrates a store an older MLflow
wrote (saying so), and stops with the fix when the store is newer than this MLflow.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import TYPE_CHECKING

from flywheel.errors import ConfigError
from flywheel.stores import prepare

if TYPE_CHECKING:
    from flywheel.settings import Settings

log = logging.getLogger("flywheel.mlflow")
CHAMPION, PREVIOUS, CANDIDATE = "champion", "previous", "candidate"  # the registry's aliases


def ensure(settings: Settings) -> None:
    """Prepare the tracking store of ``settings`` if it is the local SQLite one (else nothing)."""
    import mlflow

    uri = settings.mlflow_tracking_uri
    if not uri.startswith("sqlite:"):
        return  # a tracking server migrates its own store
    prepare(settings.state_dir, "mlflow", f"mlflow {mlflow.__version__}", lambda: _open_or_migrate(uri))


def _open_or_migrate(uri: str) -> None:
    """Create a new store, or migrate one of an older schema to this MLflow's (saying so), or
    refuse one a newer MLflow wrote. MLflow would migrate an old store missing some tables by
    itself, silently, under a lock in this machine's temp dir only: the schema is read first."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import (
        _get_alembic_config,
        _get_latest_schema_revision,
        _get_schema_version,
        _upgrade_db,
        create_sqlalchemy_engine_with_retry,
    )
    from mlflow.tracking._tracking_service.utils import _get_sqlalchemy_store  # as a client opens it

    head = _get_latest_schema_revision()
    engine = create_sqlalchemy_engine_with_retry(uri)
    try:
        found = _get_schema_version(engine)  # None: a new store
        if found is not None and found != head:
            try:
                ScriptDirectory.from_config(_get_alembic_config(uri)).get_revision(found)
            except Exception as exc:  # alembic's error for a revision this MLflow does not know
                raise newer_store_error(uri, exc) from exc
            said = "the MLflow store %s has schema %s, this MLflow uses %s: migrating it (once)"
            log.warning(said, uri, found, head)
            _upgrade_db(engine)
    finally:
        engine.dispose()
    _get_sqlalchemy_store(uri, None)  # creates the tables of a new store


def newer_store_error(uri: str, exc: Exception) -> ConfigError:
    return ConfigError(
        f"the MLflow store {uri} was written by a newer MLflow than this one ({exc}); install the "
        "MLflow of requirements/requirements.lock that wrote it (`make setup`), or point "
        "mlflow.tracking_uri at a store of this version"
    )


def quiet_mlflow() -> None:
    """Keep MLflow's chatter out of what a user reads: artifact download bars and the pyfunc
    CloudPickle warning (our pyfunc is a class of this package). The registration notices
    MLflow prints to stderr are held back in ``register``."""

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow's own SQLAlchemy use (its ``noload`` loader strategy), and its request that a
    # pyfunc's predict carry type hints: nothing a Flywheel user can act on.
    warnings.filterwarnings("ignore", message=r".*``noload`` loader strategy is deprecated.*")
    warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method")  # ANSI-coloured
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial ... tables"


def use_credentials(settings: Settings) -> None:
    """MLflow takes a tracking server's basic-auth credentials from the environment: set them
    from ``mlflow.username`` / ``mlflow.password`` (a process talks to one tracking server)."""

    if settings.mlflow.username is not None:
        password = settings.mlflow.password
        if password is None:  # the settings refuse a username alone; a copy made without validation
            raise ConfigError("mlflow.username is set without mlflow.password; set both or neither")
        os.environ["MLFLOW_TRACKING_USERNAME"] = settings.mlflow.username
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password.get_secret_value()
