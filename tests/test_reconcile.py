"""End-of-sweep reconciliation against a real MLflow store: a run whose trial Tune never recorded
(a driver killed between starting a trial and saving Tune's state) does not stay as a trial."""

from sweeps.execution.tracking import (ORPHAN_TAG, child_runs, client_for, ensure_experiment,
                                       open_child_run, open_parent_run, reconcile)


def test_an_orphaned_child_run_is_retired_and_not_counted(tmp_path):
    client = client_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = ensure_experiment(client, "audio-vae", str(tmp_path / "mlartifacts"))
    parent = open_parent_run(client, experiment_id, "s", tmp_path)
    kept = open_child_run(client, experiment_id, parent, "aaaa1111", "trial_aaaa1111", "s")
    orphan = open_child_run(client, experiment_id, parent, "bbbb2222", "trial_bbbb2222", "s")
    counts = reconcile(client, experiment_id, parent, {"aaaa1111": ("completed", None)})
    assert counts == {"completed": 1}
    assert [r.info.run_id for r in child_runs(client, experiment_id, parent)] == [kept]
    retired = client.get_run(orphan)
    assert retired.info.lifecycle_stage == "deleted" and retired.info.status == "FAILED"
    assert "killed" in retired.data.tags[ORPHAN_TAG]
