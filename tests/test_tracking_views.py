"""The MLflow link a sweep prints opens the runs table ranked best first, with the best report's
columns: the saved views every experiment gets (a real sqlite store), the URL that opens them,
and MLflow's installed UI still reading both (its own JS, read as text: a browser is the manual
check, see tests/test_sweep.py's module doc)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from vae.metric_table import METRICS
from vae.training.mlflow import (BEST_OBJECTIVE_METRIC, BEST_STEP_METRIC, OBJECTIVE_FORMULA_TAG,
                                 OUTCOME_TAG, SAVED_VIEW_TAG, SWEEP_TAG, VIEW_QUERY, best_metric,
                                 ensure_experiment, runs_page)

UI_JS = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"


def opened_view(url: str) -> tuple[str, str]:
    """The (route, saved view id) a runs-page link opens: MLflow's UI routes in the fragment."""
    route, _, query = urlsplit(url).fragment.partition("?")
    params = parse_qs(query)
    assert params["workflowType"] == ["machine_learning"]  # the runs table, not GenAI's pages
    return route, params[VIEW_QUERY][0]


def view_state(client: MlflowClient, experiment_id: str, view_id: str) -> dict:
    """The saved view's table state, read as the UI reads it: a JSON envelope with a name and a
    creation time, and the state inside it as a JSON string."""
    envelope = json.loads(client.get_experiment(experiment_id).tags[SAVED_VIEW_TAG + view_id])
    assert isinstance(envelope["name"], str) and isinstance(envelope["createdAt"], int)
    return json.loads(envelope["state"])


@pytest.fixture
def store(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return client, ensure_experiment(client, "audio-vae")


@pytest.mark.parametrize("mode, ascending", [("min", True), ("max", False)])
def test_the_link_opens_a_view_ranking_by_the_best_objective_with_its_parts(store, mode, ascending):
    client, experiment_id = store
    route, view_id = opened_view(runs_page("sqlite:////data/mlflow.db", experiment_id, mode))
    # the UI drops the view key on the experiment's bare route (it redirects to /runs first)
    assert route == f"/experiments/{experiment_id}/runs"
    state = view_state(client, experiment_id, view_id)
    assert state["orderByKey"] == f"metrics.`{BEST_OBJECTIVE_METRIC}`"
    assert state["orderByAsc"] is ascending
    # the best objective first, then the distortion and the rate a penalised one is made of
    columns = state["selectedColumns"]
    assert columns[:3] == [f"metrics.`{m}`" for m in (
        BEST_OBJECTIVE_METRIC, best_metric(METRICS["mel_distance_sampled"].key),
        best_metric(METRICS["kl_kbps"].key))]
    assert {f"metrics.`{BEST_STEP_METRIC}`",
            *(f"tags.`{t}`" for t in (OBJECTIVE_FORMULA_TAG, OUTCOME_TAG, SWEEP_TAG))} <= set(columns)
    # shown in that order (the table orders metrics by name otherwise), each wide enough
    assert state["columnOrder"] == columns and set(state["columnWidths"]) == set(columns)


def test_the_link_to_a_tracking_server_and_the_plain_page():
    assert runs_page("http://mlflow.lan:5000/", "3", "max").startswith("http://mlflow.lan:5000/#/")
    assert runs_page("sqlite:////data/mlflow.db", "3", None) == \
        "http://127.0.0.1:5000/#/experiments/3?workflowType=machine_learning"


def test_views_are_written_once_and_repaired_when_outdated(store):
    client, experiment_id = store
    tags = client.get_experiment(experiment_id).tags
    views = {key: value for key, value in tags.items() if key.startswith(SAVED_VIEW_TAG)}
    assert len(views) == 2
    assert ensure_experiment(client, "audio-vae") == experiment_id
    assert {k: client.get_experiment(experiment_id).tags[k] for k in views} == views  # untouched
    key = next(iter(views))
    client.set_experiment_tag(experiment_id, key, json.dumps(
        {"name": "old", "createdAt": 1, "state": json.dumps({"orderByKey": "metrics.`loss`"})}))
    ensure_experiment(client, "audio-vae")
    assert json.loads(client.get_experiment(experiment_id).tags[key])["state"] == \
        json.loads(views[key])["state"]


def test_mlflows_ui_reads_the_view_key_the_saved_view_tag_and_the_state_used():
    """What the link relies on, in the installed UI's code: the URL key, the experiment tag's
    prefix, the sort and column state a view restores; an MLflow upgrade that drops one fails
    here, not silently in the browser."""
    code = "\n".join(path.read_text(errors="replace") for path in UI_JS.glob("*.js"))
    for literal in (f'"{VIEW_QUERY}"', f'"{SAVED_VIEW_TAG}"', '"orderByKey"', '"orderByAsc"',
                    '"selectedColumns"', '"/experiments/:experimentId/:tabName"'):
        assert literal in code, literal
