"""Production shape of the registry: an MLflow tracking server on PostgreSQL, artifacts
served through it, basic auth on. Flywheel authenticates from its settings; a client
without credentials can neither register a model nor move an alias."""

from __future__ import annotations

import pytest

from flywheel.settings import load_settings
from tests.services import mlflow_server, postgres

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ADMIN_PASSWORD = "flywheel-admin-password-01"


def test_flywheel_authenticates_and_an_anonymous_client_is_refused(tmp_path, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from orchestration.registry import Registry

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with postgres("mlflow") as db, mlflow_server(db, tmp_path / "mlflow", ADMIN_PASSWORD) as url:
        anonymous = MlflowClient(url)
        with pytest.raises(MlflowException, match=r"401|Unauthorized|credentials"):
            anonymous.create_registered_model("intruder")
        settings = load_settings(
            state_dir=tmp_path / "state",
            mlflow={"tracking_uri": url, "username": "admin", "password": ADMIN_PASSWORD},
        )
        registry = Registry(settings)  # sets the credentials for this process's MLflow clients
        registry.client.create_registered_model("sentiment")
        run = registry.client.create_run(registry.client.create_experiment("flywheel-test"))
        version = registry.client.create_model_version(
            "sentiment", f"runs:/{run.info.run_id}/model", run.info.run_id
        )
        registry.client.set_registered_model_alias("sentiment", "champion", version.version)
        # artifacts go through the tracking server (mlflow-artifacts:/) into its destination
        registry.client.log_text(run.info.run_id, "review note", "review/note.md")
        (stored,) = (tmp_path / "mlflow" / "artifacts").rglob("note.md")
        assert stored.read_text() == "review note"
        assert registry.alias_version("sentiment", "champion") == int(version.version)
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
        with pytest.raises(MlflowException, match=r"401|Unauthorized|credentials"):
            MlflowClient(url).set_registered_model_alias("sentiment", "champion", version.version)
