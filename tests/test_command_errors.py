"""Every console script (pyproject.toml [project.scripts]) refuses each kind of bad input the same
way (vae/cli/common.py's convention): exit status 2, no traceback, an error line naming the path or
argument at fault, and nothing created on disk. Each case should fail before Ray starts or a model
trains, so the table runs in the time of its process start-ups."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml

from tests.conftest import MICRO
from tests.test_cli import SCRIPTS, command
from tests.test_inference import SR, make_bundle, make_model, tone
from tests.test_study import SPACE as STUDY_SPACE
from tests.test_sweep_faults import space as sweep_space
from vae.inference import encode_file, load_bundle
from vae.inference.bundle import MODEL_PREFIX


@dataclass(frozen=True)
class Case:
    script: str
    label: str
    args: tuple[str, ...]  # "{name}" is replaced by the path of that name (see `ground`)
    names: tuple[str, ...]  # what stderr must name: the first on its error line, the rest anywhere


def case(script: str, label: str, *args: str, names: str | tuple[str, ...]) -> Case:
    return Case(script, label, args, names if isinstance(names, tuple) else (names,))


def sweep_run(*args: str) -> tuple[str, ...]:
    return (*args, "--tracking-uri", "sqlite:///{here}/mlflow.db", "--num-cpus", "2", "--no-report")


def study(space: str, corpus: str = "{corpus}", *extra: str) -> tuple[str, ...]:
    return (space, "--corpus", corpus, "-o", "{out}", *extra)


MICRO_ARGS = tuple(f"{k}={v}".replace(" ", "") for k, v in MICRO.items())
UNDER_FILE = "{file}/sub"  # an output path below a regular file

CASES = [
    # ---- vae-* (crafted bundles and latent files are test_untrusted_* / test_bad_audio_latents)
    case("vae-train", "missing config", "{missing}.yaml", names="{missing}.yaml"),
    case("vae-train", "config is a folder", "{folder}", names="{folder}"),
    case("vae-train", "malformed config", "{bad_yaml}", names="{bad_yaml}"),
    case("vae-train", "bad value", "trainer.max_steps=many",
         names=("command-line overrides", "trainer.max_steps")),
    case("vae-train", "missing --ckpt-path", *MICRO_ARGS, "trainer.max_steps=1", "-o", "{out}",
         "--tracking-uri", "sqlite:///{here}/mlflow.db", "--ckpt-path", "{missing}.ckpt",
         names="{missing}.ckpt"),
    case("vae-train", "-o under a file", *MICRO_ARGS, "trainer.max_steps=1", "-o", UNDER_FILE,
         "--tracking-uri", "sqlite:///{here}/mlflow.db", names="{file}"),
    case("vae-encode", "missing input", "{missing}.wav", "--model", "{bundle}", "-o", "{out}",
         names="{missing}.wav"),
    case("vae-encode", "missing model", "{audio}", "--model", "{missing}", "-o", "{out}",
         names="{missing}"),
    case("vae-encode", "model is a file", "{audio}", "--model", "{file}", "-o", "{out}",
         names="{file}"),
    case("vae-encode", "-o under a file", "{audio}", "--model", "{bundle}", "-o",
         UNDER_FILE + ".npz", names="{file}"),
    case("vae-encode", "bad --chunk-seconds", "{audio}", "--model", "{bundle}", "-o", "{out}",
         "--chunk-seconds", "long", names="--chunk-seconds"),
    case("vae-encode", "--stream with a model that is not causal", "{audio}", "--model",
         "{bundle}", "-o", "{out}.npz", "--stream", names=("{bundle}", "is not causal")),
    case("vae-encode", "--stream of a folder", "{folder}", "--model", "{bundle}", "-o",
         "{out}.npz", "--stream", names="{folder}"),
    case("vae-decode", "--stream with a model that is not causal", "{latents}", "-o",
         "{out}.wav", "--stream", names="is not causal"),
    case("vae-decode", "missing latents", "{missing}.npz", "-o", "{out}", names="{missing}.npz"),
    case("vae-decode", "folder without latents", "{folder}", "-o", "{out}", names="{folder}"),
    case("vae-decode", "-o under a file", "{latents}", "-o", UNDER_FILE + ".wav", names="{file}"),
    case("vae-decode", "bad --sample-rate", "{latents}", "-o", "{out}", "--sample-rate", "fast",
         names="--sample-rate"),
    case("vae-compress", "missing input", "{missing}.wav", "--model", "{bundle}", "-o",
         "{out}.vaec", names="{missing}.wav"),
    case("vae-compress", "model is a file", "{audio}", "--model", "{file}", "-o", "{out}.vaec",
         names="{file}"),
    case("vae-compress", "-o under a file", "{audio}", "--model", "{bundle}", "-o",
         UNDER_FILE + ".vaec", names="{file}"),
    case("vae-compress", "bad --scale", "{audio}", "--model", "{bundle}", "-o", "{out}.vaec",
         "--scale", "-1", names="--scale"),
    case("vae-compress", "bad --dither-seed", "{audio}", "--model", "{bundle}", "-o", "{out}.vaec",
         "--dither-seed", "-3", names=("--dither-seed", "expected a seed")),
    case("vae-compress", "--kbps beside --scale", "{audio}", "--model", "{bundle}", "-o",
         "{out}.vaec", "--kbps", "3", "--scale", "2", names="--scale"),
    case("vae-decompress", "missing file", "{missing}.vaec", "--model", "{bundle}", "-o",
         "{out}.wav", names="{missing}.vaec"),
    case("vae-decompress", "not a .vaec file", "{file}", "--model", "{bundle}", "-o", "{out}.wav",
         names=("{file}", "not a .vaec file")),
    case("vae-decompress", "-o under a file", "{file}", "--model", "{bundle}", "-o",
         UNDER_FILE + ".wav", names="{file}"),
    case("vae-evaluate", "missing audio", "--model", "{bundle}", "{missing}.wav",
         names="{missing}.wav"),
    case("vae-evaluate", "model is a file", "--model", "{file}", "{audio}", names="{file}"),
    case("vae-evaluate", "--json under a file", "--model", "{bundle}", "{audio}", "--json",
         UNDER_FILE + ".json", names="{file}"),
    case("vae-export", "missing checkpoint", "{missing}.ckpt", "-o", "{out}",
         names="{missing}.ckpt"),
    case("vae-export", "checkpoint is a folder", "{folder}", "-o", "{out}", names="{folder}"),
    case("vae-export", "-o under a file", "{ckpt}", "-o", UNDER_FILE, names="{file}"),
    case("vae-benchmark", "bad key", "loss.kl.wieght=1",
         names=("command-line overrides", "loss.kl.wieght")),
    case("vae-benchmark", "--streaming with --memory", "--streaming", "--memory",
         names="--streaming"),
    case("vae-benchmark", "bad --repeats", "--repeats", "many", names="--repeats"),
    case("vae-app", "bad --max-upload-mb", "--max-upload-mb", "lots", names="--max-upload-mb"),
    # ---- sweep-*
    case("sweep-run", "missing space", *sweep_run("{missing}.yaml"), names="{missing}.yaml"),
    case("sweep-run", "space is a folder", *sweep_run("{folder}"), names="{folder}"),
    case("sweep-run", "malformed space", *sweep_run("{bad_yaml}"), names="{bad_yaml}"),
    case("sweep-run", "unsafe name in the space", *sweep_run("{dotdot_space}"),
         names=("{dotdot_space}", "name: ")),
    case("sweep-run", "unsafe --name", *sweep_run("{space}", "--name", "../x"),
         names=("--name", "'../x'")),
    case("sweep-run", "--storage-path under a file", *sweep_run("{space}", "--storage-path",
         UNDER_FILE), names="{file}"),
    case("sweep-run", "--resume of no sweep", *sweep_run("{space}", "--resume", "--storage-path",
         "{out}"), names=("--resume", "{out}")),
    case("sweep-run", "bad --num-samples", *sweep_run("{space}", "--num-samples", "many"),
         names="--num-samples"),
    *(case(script, f"sweep name {name!r}", name, "--storage-path", "{out}", *extra,
           names=f"sweep name {name!r}")
      for script, extra in (("sweep-report", ()), ("sweep-export", ("-o", "{here}/bundle")))
      for name in ("../x", "")),  # more names: test_layout.py
    case("sweep-report", "no such sweep", "nope", "--storage-path", "{out}", names="{out}/nope"),
    case("sweep-report", "-o under a file", "nope", "--storage-path", "{out}", "-o", UNDER_FILE,
         names="{file}"),
    case("sweep-export", "no such sweep", "nope", "--storage-path", "{out}", "-o",
         "{here}/bundle", names="{out}/nope"),
    case("sweep-export", "-o under a file", "nope", "--storage-path", "{out}", "-o", UNDER_FILE,
         names="{file}"),
    case("sweep-promote", "no such sweep", "nope", "--top", "2", "--steps", "10",
         "--storage-path", "{out}", names="{out}/nope"),
    case("sweep-promote", "--top 1", "nope", "--top", "1", "--steps", "10", "--storage-path",
         "{out}", names="--top"),
    case("sweep-promote", "unsafe --name", "nope", "--top", "2", "--steps", "10", "--name",
         "../x", "--storage-path", "{out}", names=("--name", "'../x'")),
    case("sweep-benchmark", "bad --only", "--only", "everything", names="--only"),
    case("sweep-corpus", "-o under a file", "-o", UNDER_FILE, names="{file}"),
    case("sweep-corpus", "-o is a file", "-o", "{file}", names="{file}"),
    case("sweep-study", "missing space", *study("{missing}.yaml"), names="{missing}.yaml"),
    case("sweep-study", "space is a folder", *study("{folder}"), names="{folder}"),
    case("sweep-study", "malformed space", *study("{bad_yaml}"), names="{bad_yaml}"),
    case("sweep-study", "unsafe name in the space", *study("{dotdot_study}"),
         names=("{dotdot_study}", "name: ")),
    case("sweep-study", "space not on folder data", *study("{space}"),
         names=("{space}", "data.source")),
    case("sweep-study", "missing corpus", *study("{study_space}", "{missing}"), names="{missing}"),
    case("sweep-study", "corpus is a file", *study("{study_space}", "{file}"), names="{file}"),
    case("sweep-study", "corpus without audio", *study("{study_space}", "{folder}"),
         names="{folder}"),
    case("sweep-study", "corpus without a usable valid split",
         *study("{study_space}", "{short_valid}"), names=("{short_valid}", "valid")),
    case("sweep-study", "-o under a file", "{study_space}", "--corpus", "{corpus}", "-o",
         UNDER_FILE, names="{file}"),
    case("sweep-study", "bad --arms", *study("{study_space}", "{corpus}", "--arms", "best"),
         names="--arms"),
    case("sweep-study", "--trials 0", *study("{study_space}", "{corpus}", "--trials", "0"),
         names="--trials"),
    case("sweep-gpu-check", "-o under a file", "-o", UNDER_FILE, names="{file}"),
    case("sweep-gpu-check", "bad --skip", "-o", "{out}", "--skip", "nothing", names="--skip"),
]


def write_tones(folder: Path, seconds: float, count: int) -> None:
    folder.mkdir(parents=True)
    for k in range(count):
        sf.write(folder / f"{k}.wav", tone(seconds, SR, 2, 200.0 * (k + 1), k), SR)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A bundle, a latent file it wrote, a vae-train-style checkpoint and the audio they came from."""
    root = tmp_path_factory.mktemp("models")
    bundle = make_bundle(root / "bundle")
    audio = root / "tone.wav"
    sf.write(audio, tone(0.5, SR, 2), SR)
    latents = encode_file(load_bundle(bundle), audio).save(root / "tone.npz")
    model, config = make_model()
    ckpt = root / "last.ckpt"
    torch.save({"hyper_parameters": {"config": config.model_dump(mode="json")}, "global_step": 0,
                "state_dict": {MODEL_PREFIX + k: v for k, v in model.state_dict().items()}}, ckpt)
    return {"bundle": bundle, "audio": audio, "latents": latents, "ckpt": ckpt}


@pytest.fixture
def ground(tmp_path, models) -> dict[str, Path]:
    """The inputs every case draws on, inside ``here`` (the commands' working directory)."""
    here = tmp_path / "here"
    (here / "folder").mkdir(parents=True)
    (here / "file").write_text("a regular file\n")
    (here / "bad.yaml").write_text("name: [unclosed\n")
    (here / "space.yaml").write_text(yaml.safe_dump(sweep_space("faults", 160, 2, 2, 20)))
    (here / "dotdot.yaml").write_text(yaml.safe_dump({**sweep_space("faults", 160, 2, 2, 20),
                                                      "name": ".."}))
    (here / "study.yaml").write_text(yaml.safe_dump(STUDY_SPACE))
    (here / "dotdot_study.yaml").write_text(yaml.safe_dump({**STUDY_SPACE, "name": ".."}))
    write_tones(here / "corpus" / "train", 1.0, 2)
    write_tones(here / "corpus" / "valid", 1.0, 1)
    write_tones(here / "short_valid" / "train", 1.0, 2)
    write_tones(here / "short_valid" / "valid", 0.01, 1)  # shorter than a 0.1 s chunk
    return {**models, "here": here, "folder": here / "folder", "file": here / "file",
            "missing": here / "missing", "out": here / "out", "bad_yaml": here / "bad.yaml",
            "space": here / "space.yaml", "dotdot_space": here / "dotdot.yaml",
            "study_space": here / "study.yaml", "dotdot_study": here / "dotdot_study.yaml",
            "corpus": here / "corpus", "short_valid": here / "short_valid"}


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def run_case(item: Case, paths: dict[str, Path], home: Path) -> subprocess.CompletedProcess:
    names = {k: str(v) for k, v in paths.items()}
    args = [arg.format(**names) for arg in item.args]
    env = {**os.environ, "HOME": str(home)}  # no cache or state of the real home is read or written
    for variable in ("SWEEP_STORAGE", "SWEEP_STATE_DIR", "MLFLOW_TRACKING_URI"):
        env.pop(variable, None)
    return subprocess.run([*command(item.script), *args], capture_output=True, text=True,
                          timeout=300, cwd=paths["here"], env=env)


def error_line(stderr: str) -> str:
    """Ours start with ``error:``; argparse's read ``PROG: error: ...`` after the usage."""
    return next((line for line in stderr.splitlines() if "error: " in line), "")


@pytest.mark.parametrize("item", CASES, ids=[f"{c.script}: {c.label}" for c in CASES])
def test_bad_input_is_exit_2_one_error_line_and_creates_nothing(item, ground, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    before = tree(ground["here"])
    done = run_case(item, ground, home)
    names = [name.format(**{k: str(v) for k, v in ground.items()}) for name in item.names]
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert names[0] in error_line(done.stderr), done.stderr[-3000:]
    assert all(name in done.stderr for name in names[1:]), done.stderr[-3000:]
    assert tree(ground["here"]) == before  # no output folder, store, lock or cache left behind


def test_every_console_script_has_a_case():
    assert {c.script for c in CASES} == set(SCRIPTS)
