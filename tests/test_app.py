"""The Streamlit app: its functions, the page under Streamlit's AppTest (bundle, upload, bad input,
registered model, A/B across the trials of a real sweep), the ``vae-app`` launcher, and the real
page served by ``streamlit run`` and captured in headless Chromium (tests/screenshot_app.py)."""

from __future__ import annotations

import io
import math
import os
import struct
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from tests.conftest import MICRO
from tests.test_inference import make_bundle, register_bundle, tone
from sweeps.app import clips, plots
from sweeps.app.cli import PAGE
from sweeps.app.models import discover_bundles
from sweeps.app.trials import seed_default_trial, trial_bundle
from sweeps.results.pareto import sweep_front
from sweeps.layout import CHECKPOINT_FILE, SweepPaths
from sweeps.results.records import list_sweeps, sweep_trials
from vae.inference import load_bundle, load_checkpoint_model

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = PAGE
SR = 44100
RUN_TIMEOUT = 180


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("app_bundle") / "tiny")


@pytest.fixture
def page(bundle_dir, tmp_path, monkeypatch):
    """An AppTest of the app with the tiny bundle preselected and no sweeps."""
    monkeypatch.setenv("VAE_APP_MODEL", str(bundle_dir))
    monkeypatch.setenv("VAE_APP_BUNDLE_ROOTS", str(tmp_path / "no_roots"))
    monkeypatch.setenv("SWEEP_STORAGE", str(tmp_path / "no_sweeps"))
    monkeypatch.setenv("VAE_APP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'default-mlflow.db'}")
    monkeypatch.delenv("SWEEP_STATE_DIR", raising=False)
    for name in ("VAE_APP_SWEEP_ROOTS", "VAE_APP_TRACKING_URIS", "VAE_APP_MAX_UPLOAD_MB"):
        monkeypatch.setenv(name, "")  # so that a test's own setting is undone after it
    return AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT)


def metric_values(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def shown(value: float) -> str:
    return f"{value:.4g}"


# ---- functions ------------------------------------------------------------------------------------

def test_edit_latent_scales_and_offsets_only_the_chosen_channels():
    latent = torch.randn(6, 50)
    edited = clips.edit_latent(latent, [1, 4], scale=-2.0, offset=0.5)
    torch.testing.assert_close(edited[[1, 4]], latent[[1, 4]] * -2.0 + 0.5)
    torch.testing.assert_close(edited[[0, 2, 3, 5]], latent[[0, 2, 3, 5]])
    assert torch.equal(clips.edit_latent(latent, [], 5.0, 5.0), latent)


def test_interpolation_endpoints_and_prior_samples():
    a, b = torch.randn(4, 30), torch.randn(4, 40)
    torch.testing.assert_close(clips.interpolate_latents(a, b, 0.0), a)
    torch.testing.assert_close(clips.interpolate_latents(a, b, 1.0), b[:, :30])
    torch.testing.assert_close(clips.interpolate_latents(a, b, 0.25), 0.75 * a + 0.25 * b[:, :30])
    draw = clips.sample_prior(8, 4000, temperature=0.5, seed=3)
    assert draw.shape == (8, 4000) and torch.equal(draw, clips.sample_prior(8, 4000, 0.5, 3))
    assert float(draw.std()) == pytest.approx(0.5, rel=0.05)
    assert not torch.equal(draw, clips.sample_prior(8, 4000, 0.5, 4))


def test_wav_bytes_keep_the_level_for_fair_ab_listening():
    quiet = torch.full((2, 1000), 0.05)
    data, rate = sf.read(io.BytesIO(clips.wav_bytes(quiet, SR)), dtype="float32")
    assert rate == SR and data.shape == (1000, 2)
    assert float(np.abs(data).max()) == pytest.approx(0.05, abs=1e-4)  # not normalised to full scale


def test_discover_bundles_finds_complete_bundles_only(bundle_dir, tmp_path):
    import shutil

    shutil.copytree(bundle_dir, tmp_path / "runs" / "a" / "bundle")
    (tmp_path / "runs" / "b").mkdir(parents=True)
    (tmp_path / "runs" / "b" / "config.yaml").write_text("model: {}")  # no weights: not a bundle
    assert discover_bundles([tmp_path / "runs", tmp_path / "missing"]) == \
        [(tmp_path / "runs" / "a" / "bundle").resolve()]


def test_comparison_png_is_an_image_with_one_column_per_clip():
    pair = {"original": torch.randn(2, SR) * 0.1, "reconstruction": torch.randn(2, SR) * 0.1}
    png = plots.comparison_png(pair, SR)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    wider = plots.comparison_png({**pair, "third": torch.zeros(2, SR)}, SR)
    assert height > 200 and struct.unpack(">II", wider[16:24])[0] > width * 1.3


# ---- the vae-app launcher -------------------------------------------------------------------------

def test_launcher_help_says_what_it_passes_on():
    done = subprocess.run([sys.executable, "-m", "sweeps.app.cli", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "STREAMLIT_ARGS" in done.stdout and "SWEEP_STORAGE" in done.stdout


def test_launcher_serves_the_page_with_the_streamlit_args_given(bundle_dir, tmp_path):
    from tests.screenshot_app import serve_app

    env = {"VAE_APP_MODEL": str(bundle_dir), "SWEEP_STORAGE": str(tmp_path / "none")}
    with serve_app(env, log_path=tmp_path / "streamlit.log") as url:  # --server.port etc. passed on
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=10) as reply:
            assert reply.read().strip() == b"ok"


# ---- the page under AppTest -----------------------------------------------------------------------

def test_page_reconstructs_the_example_clip(page, bundle_dir):
    at = page.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert [t.label for t in at.tabs] == ["Reconstruct", "Latent controls", "A/B sweep trials",
                                         "Compress"]
    # the metrics shown are the scoring of the same clip through the same model
    bundle = load_bundle(bundle_dir)
    clip = clips.load_clip(clips.Clip(clips.EXAMPLE), bundle, at.slider(key="example_seconds").value)
    expected = clips.run_model(bundle, clip).metrics
    assert metric_values(at) == {k: shown(expected[k]) for k in
                                 ("mel_distance", "stft_distance", "si_sdr", "kl_kbps")}
    assert len(at.get("audio")) >= 5  # original, reconstruction, edited, interpolated, prior
    assert len(at.image) == 4  # one comparison figure per section
    assert any("No sweeps" in i.value for i in at.info)


def test_page_reconstructs_an_uploaded_file(page, bundle_dir):
    at = page.run()
    buffer = io.BytesIO()
    sf.write(buffer, tone(0.6, 22050, 1, 700.0), 22050, format="FLAC")
    at.file_uploader(key="upload_a").upload("song.flac", buffer.getvalue(), "audio/flac")
    at.run()
    assert not at.exception and not at.error
    caption = " ".join(c.value for c in at.caption)
    assert "song.flac" in caption and "0.60 s at 44100 Hz" in caption
    bundle = load_bundle(bundle_dir)
    audio = clips.load_clip(clips.Clip("song.flac", buffer.getvalue()), bundle, 10.0)
    expected = clips.run_model(bundle, audio).metrics
    assert metric_values(at)["mel_distance"] == shown(expected["mel_distance"])
    assert metric_values(at)["si_sdr"] == shown(expected["si_sdr"])


def test_page_reports_a_file_it_cannot_read(page):
    at = page.run()
    at.file_uploader(key="upload_a").upload("broken.wav", b"RIFF\x00\x00\x00\x00WAVEjunk", "audio/wav")
    at.run()
    assert not at.exception
    assert any("broken.wav" in e.value and "not readable as audio" in e.value for e in at.error)


def test_page_reports_an_incomplete_bundle(page, tmp_path):
    partial = tmp_path / "roots" / "partial"
    partial.mkdir(parents=True)
    (partial / "config.yaml").write_text("{}")
    os.environ["VAE_APP_BUNDLE_ROOTS"] = str(tmp_path / "roots")  # restored by the fixture
    at = page.run()
    at.text_input(key="bundle_path").set_value(str(partial)).run()
    assert not at.exception
    assert any("missing model.safetensors" in e.value for e in at.error)


def test_latent_controls_rerun_cleanly(page):
    at = page.run()
    at.multiselect(key="channels").set_value([0, 2])
    at.slider(key="scale").set_value(0.0)
    at.slider(key="offset").set_value(1.5)
    at.slider(key="alpha").set_value(0.8)
    at.slider(key="temperature").set_value(0.3)
    at.number_input(key="prior_seed").set_value(7)
    at.run()
    assert not at.exception and not at.error
    assert len(at.image) == 4 and len(at.get("audio")) >= 5


def test_page_loads_a_registered_model(page, bundle_dir, tmp_path_factory):
    tracking_uri = register_bundle(bundle_dir, tmp_path_factory.mktemp("app_mlflow"))
    at = page.run()
    at.radio(key="model_kind").set_value("Registered model (MLflow)").run()
    assert any("no MLflow database at" in e.value for e in at.error)  # reported, not created
    assert not Path(os.environ["MLFLOW_TRACKING_URI"][len("sqlite:///"):]).exists()
    os.environ["VAE_APP_TRACKING_URIS"] = tracking_uri  # allowed at start; restored by the fixture
    at.run()
    at.selectbox(key="tracking_uri").set_value(tracking_uri).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    choice = at.selectbox(key="registered_uri")
    assert choice.options[:2] == ["models:/tiny-vae@champion", "models:/tiny-vae/1"]
    assert choice.value == "models:/tiny-vae@champion"
    assert len(at.metric) == 4 and all(m.value != "–" for m in at.metric)


def test_registered_model_mode_without_a_tracking_store_says_how_to_give_one(page):
    del os.environ["MLFLOW_TRACKING_URI"]  # restored by the fixture, as VAE_APP_TRACKING_URIS
    at = page.run()
    at.radio(key="model_kind").set_value("Registered model (MLflow)").run()
    assert not at.exception and not at.error
    shown = [i.value for i in at.main.info]  # in the main area: the sidebar alone leaves it blank
    assert any("vae-app --tracking-uri" in text for text in shown), shown


# ---- A/B across the trials of a real sweep --------------------------------------------------------

SEED_LR, OTHER_LR = 1e-7, 3e-3


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real two-trial sweep (Ray Tune, Optuna, MLflow sqlite): the seeded default first."""
    import ray

    from sweeps.execution.driver import run_sweep
    from sweeps.space.schema import load_space

    root = tmp_path_factory.mktemp("ab_sweep")
    space = {
        "name": "ab",
        "base": {"overrides": {**MICRO, "trainer.max_steps": 3, "trainer.val_every_steps": 3}},
        "objective": {"metric": "val/mel_distance", "mode": "min"},
        "searcher": {"sampler": "random", "seed": 0},
        "scheduler": {"type": "none"},
        "num_samples": 2, "max_concurrent_trials": 1, "resources": {"cpu": 1},
        "params": {"optim.lr": {"type": "categorical", "choices": [OTHER_LR, SEED_LR]}},
        "points_to_evaluate": [{"optim.lr": SEED_LR}, {"optim.lr": OTHER_LR}],
    }
    (root / "space.yaml").write_text(yaml.safe_dump(space))
    paths = SweepPaths(str(root / "results"), "ab")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        run_sweep(load_space(root / "space.yaml"), paths, tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                  report=False)
    finally:
        ray.shutdown()
    return {"storage": str(root / "results"), "name": "ab", "root": root}


@pytest.mark.slow
def test_sweep_trials_best_first_seed_default_and_cached_bundles(sweep, tmp_path):
    assert list_sweeps(sweep["storage"]) == ["ab"]
    state, trials = sweep_trials(SweepPaths(sweep["storage"], "ab"))
    assert len(trials) == 2 and all(t.checkpoint for t in trials)
    objectives = [t.metrics["objective"] for t in trials]
    assert objectives == sorted(objectives)  # best first (mode min)
    assert [t.outcome for t in trials] == ["completed", "completed"]  # recorded by the driver
    seed, why = seed_default_trial(trials, state)
    assert seed.config["optim.lr"] == SEED_LR and seed.order == 1 and "seeded point" in why

    folder = trial_bundle(sweep["storage"], "ab", seed, tmp_path)
    bundle = load_bundle(folder)
    model, _, _ = load_checkpoint_model(Path(seed.checkpoint) / CHECKPOINT_FILE)
    for key, value in model.state_dict().items():
        assert torch.equal(bundle.model.state_dict()[key], value), key
    assert bundle.provenance["trial_id"] == seed.trial_id
    assert bundle.metrics["objective"] == seed.metrics["objective"]
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert trial_bundle(sweep["storage"], "ab", seed, tmp_path) == folder  # cached, not rebuilt
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_page_ab_compares_two_trials_on_the_same_clip(page, sweep):
    os.environ["VAE_APP_SWEEP_ROOTS"] = sweep["storage"]  # restored by the fixture
    at = page.run()
    assert at.text_input(key="sweep_storage").value == sweep["storage"]  # starts on the root given
    assert not at.exception and not at.error, [e.value for e in at.error]
    state, trials = sweep_trials(SweepPaths(sweep["storage"], "ab"))
    best = trials[0]
    seed, _ = seed_default_trial(trials, state)
    assert at.selectbox(key="sweep").value == "ab"
    listed = at.dataframe[0].value  # best first, with each trial's outcome and best report
    assert list(listed["trial"]) == [t.trial_id for t in trials]
    assert list(listed["outcome"]) == ["completed", "completed"]
    assert {"best_objective", "best_step"} <= set(listed.columns)
    # the Pareto front (rate vs the objective) is marked; the best by the objective is on it
    front = {t.trial_id for t in sweep_front(state, trials).members}
    assert list(listed["front"]) == [t.trial_id in front for t in trials] and listed["front"][0]
    table = at.table[0].value
    assert list(table.columns) == [f"A: {best.trial_id}", f"B: {seed.trial_id}"]
    assert table.loc["searched: optim.lr", f"B: {seed.trial_id}"] == f"{SEED_LR:.4g}"
    assert {"clip: mel_distance", "clip: kl_kbps", "sweep: val/mel_distance"} <= set(table.index)
    assert len(at.image) == 5  # reconstruct, edit, interpolate, prior, and the A/B figure

    at.radio(key="ab_mode").set_value("Pick two trials").run()
    labels = at.selectbox(key="trial_a").options
    at.selectbox(key="trial_a").set_value(labels[1])
    at.selectbox(key="trial_b").set_value(labels[0])
    at.run()
    assert not at.exception and not at.error
    table = at.table[0].value
    assert list(table.columns) == [f"A: {trials[1].trial_id}", f"B: {trials[0].trial_id}"]
    # the two trials' models differ, so must their reconstructions of the clip
    assert table.loc["clip: mel_distance"].nunique() == 2


# ---- the real page in Chromium --------------------------------------------------------------------

@pytest.mark.slow
def test_served_app_renders_in_headless_chromium(bundle_dir, sweep, tmp_path):
    from tests import screenshot_app

    if screenshot_app.find_chromium() is None:
        pytest.skip(f"chromium not installed; CI: {screenshot_app.APT_LINE}")
    pytest.importorskip("websockets.sync.client")
    out_dir = Path(os.environ.get("VAE_APP_SCREENSHOT_DIR", tmp_path))
    env = {"VAE_APP_MODEL": str(bundle_dir), "SWEEP_STORAGE": sweep["storage"],
           "VAE_APP_CACHE": str(tmp_path / "cache"), "VAE_APP_BUNDLE_ROOTS": str(tmp_path / "none")}
    report = screenshot_app.capture_app(out_dir / "app.png", env, ab_tab=True,
                                        log_path=tmp_path / "streamlit.log")
    print(f"screenshots: {report['main']['png']} {report['ab'].get('png')}")
    for part in ("main", "ab"):
        assert report[part]["problems"] == [], report[part]
    main = report["main"]["state"]
    assert len(main["metrics"]) == 4 and not any("–" in m for m in main["metrics"])
    assert main["audio"] >= 2 and main["images"] >= 1
    assert main["tabs"][:3] == ["Reconstruct", "Latent controls", "A/B sweep trials"]
    for part in ("main", "ab"):
        png = Path(report[part]["png"]).read_bytes()
        width, height = struct.unpack(">II", png[16:24])
        assert png[:4] == b"\x89PNG" and (width, height) == (1400, 2200)
        # a rendered page has content: many distinct colours (a blank/skeleton page has few)
        from PIL import Image

        colours = Image.open(io.BytesIO(png)).convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 500
    assert not math.isnan(float(main["metrics"][0].split()[-1]))
