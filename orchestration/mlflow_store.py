"""The local MLflow tracking store (SQLite under the state dir): created or migrated once.

MLflow creates and migrates its schema when a client first opens the store; two processes
doing that at once on one SQLite file break each other. ``ensure`` does it under
``flywheel.stores.prepare`` (one process, the others wait), migrates a store an older MLflow
wrote (saying so), and stops with the fix when the store is newer than this MLflow.
"""

from __future__ import annotations

import logging

from flywheel.errors import ConfigError
from flywheel.stores import prepare

log = logging.getLogger("flywheel.mlflow")


def ensure(settings) -> None:
    """Prepare the tracking store of ``settings`` if it is the local SQLite one (else nothing)."""
    import mlflow

    uri = settings.mlflow_tracking_uri
    if not uri.startswith("sqlite:"):
        return  # a tracking server migrates its own store
    prepare(settings.state_dir, "mlflow", f"mlflow {mlflow.__version__}", lambda: _open_or_migrate(uri))


def _open_or_migrate(uri: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.store.db.utils import (
        _get_latest_schema_revision,
        _upgrade_db,
        create_sqlalchemy_engine_with_retry,
    )
    from mlflow.tracking._tracking_service.utils import _get_sqlalchemy_store  # as a client opens it

    try:
        _get_sqlalchemy_store(uri, None)  # creates the tables of a new store
        return
    except MlflowException as exc:
        if "out-of-date database schema" not in str(exc):
            raise
    head = _get_latest_schema_revision()
    log.warning("the MLflow store %s is of another schema: migrating it to %s (once)", uri, head)
    try:
        _upgrade_db(create_sqlalchemy_engine_with_retry(uri))
    except Exception as exc:  # alembic's error for a revision this MLflow does not know
        if "Can't locate revision" in str(exc) or "No such revision" in str(exc):
            raise newer_store_error(uri, exc) from exc
        raise
    _get_sqlalchemy_store(uri, None)


def newer_store_error(uri: str, exc: Exception) -> ConfigError:
    return ConfigError(
        f"the MLflow store {uri} was written by a newer MLflow than this one ({exc}); install the "
        "MLflow of requirements/requirements.lock that wrote it (`make setup`), or point "
        "mlflow.tracking_uri at a store of this version"
    )
