"""Offline checks of the AWS cluster definition (cluster/cluster.yaml, cluster/Dockerfile).

The config is run through the cluster launcher's own loading path of the installed Ray
(``yaml.safe_load`` -> ``prepare_config`` -> ``validate_config``, i.e. Ray's defaults
merge plus its JSON schema ``ray/autoscaler/ray-schema.json``), with boto3 and any
non-loopback network connection made to fail, so nothing here talks to AWS. On top of
that come the properties this project relies on: a head that takes no trials, GPU
worker types (spot first), only SSH open to the world, token authentication, an MLflow
server proxying artifacts, the image's Ray version, and a single block of values for the
user to edit. Some checks use private helpers of the installed Ray's autoscaler (AWS
security-group rules, scheduler scoring); they pin the behaviour of Ray 2.60.
"""

from __future__ import annotations

import copy
import importlib
import importlib.abc
import importlib.util
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.request
from functools import partial
from pathlib import Path

import jsonschema
import pytest
import yaml

import ray
from ray.autoscaler._private.util import check_legacy_fields, prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster" / "cluster.yaml"
DOCKERFILE = ROOT / "cluster" / "Dockerfile"

WORLD = {"0.0.0.0/0", "::/0"}
CHANGE_ME_MARK = re.compile(r"#.*\bCHANGE ME\b")  # the marker comment for values to edit


# ----------------------------------------------------------------------------- helpers


def raw_text() -> str:
    return CLUSTER_YAML.read_text()


def load(text: str | None = None) -> dict:
    # The cluster launcher reads cluster configs with yaml.safe_load (anchors/aliases and
    # merge keys are resolved by it).
    return yaml.safe_load(raw_text() if text is None else text)


def ray_prepare_and_validate(config: dict) -> dict:
    """What `ray up` does to a config before touching the cloud provider."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    check_legacy_fields(prepared)
    return prepared


@pytest.fixture
def offline(monkeypatch):
    """Fail loudly on any AWS API call or non-loopback connection."""

    def no_aws(*args, **kwargs):
        raise AssertionError("AWS API access attempted during an offline test")

    try:
        import boto3.session
    except ImportError:  # without boto3 nothing can call AWS (see `ray_aws` below)
        pass
    else:
        monkeypatch.setattr(boto3.session.Session, "client", no_aws)
        monkeypatch.setattr(boto3.session.Session, "resource", no_aws)

    real_connect = socket.socket.connect

    def guarded_connect(self, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"network access attempted during an offline test: {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)


class _NoAwsModule(types.ModuleType):
    """Stand-in for boto3/botocore when they are not installed: importable, unusable.

    Every attribute is a class whose instantiation fails, so module-level references
    (exception types in `except` clauses, `Config`, ...) work and any use raises.
    """

    __version__ = "999.0.0"

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def fail(*args, **kwargs):
            raise AssertionError(f"AWS SDK used during an offline test ({self.__name__}.{name})")

        value = type(name, (Exception,), {"__init__": fail})
        setattr(self, name, value)
        return value


class _NoAwsFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in ("boto3", "botocore"):
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _NoAwsModule(spec.name)

    def exec_module(self, module):
        module.__path__ = []


@pytest.fixture
def ray_aws(offline):
    """The installed Ray's AWS bootstrap module (`ray up`'s AWS-specific config steps).

    It imports boto3 at module level. The cluster launcher needs boto3 on the laptop
    anyway; where it is not installed (e.g. CI) an inert stand-in is used, which also
    guarantees that nothing reaches AWS.
    """
    try:
        import boto3  # noqa: F401
    except ImportError:
        before = set(sys.modules)
        finder = _NoAwsFinder()
        sys.meta_path.insert(0, finder)
        try:
            yield importlib.import_module("ray.autoscaler._private.aws.config")
        finally:
            sys.meta_path.remove(finder)
            for name in set(sys.modules) - before:
                if name.split(".")[0] in ("boto3", "botocore") or name.startswith(
                    "ray.autoscaler._private.aws"
                ):
                    del sys.modules[name]
    else:
        yield importlib.import_module("ray.autoscaler._private.aws.config")


@pytest.fixture
def prepared(offline) -> dict:
    return ray_prepare_and_validate(load())


def head_type(cfg: dict) -> dict:
    return cfg["available_node_types"][cfg["head_node_type"]]


def worker_types(cfg: dict) -> dict:
    return {k: v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]}


def mlflow_command(cfg: dict) -> str:
    cmds = [c for c in cfg["head_start_ray_commands"] if "mlflow server" in c]
    assert len(cmds) == 1, "exactly one head start command must launch the MLflow server"
    return cmds[0]


def all_commands(cfg: dict) -> list[str]:
    keys = [
        "initialization_commands",
        "setup_commands",
        "head_setup_commands",
        "worker_setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    ]
    return [c for k in keys for c in cfg.get(k, [])]


def metadata_block_lines(text: str) -> tuple[int, int]:
    """Line span [start, end) of the top-level `metadata:` block."""
    lines = text.splitlines()
    top = [i for i, line in enumerate(lines) if re.match(r"^[A-Za-z_][\w-]*:", line)]
    start = next(i for i in top if lines[i].startswith("metadata:"))
    end = next((i for i in top if i > start), len(lines))
    return start, end


# ------------------------------------------------------------------ Ray's own validation


def test_ray_cluster_launcher_accepts_config(prepared, ray_aws):
    assert prepared["provider"]["type"] == "aws"
    assert prepared["cluster_name"]
    # Ray's AWS bootstrap step for SSH keys: with `auth.ssh_private_key` set it only
    # checks that every node type names its key pair (no AWS call, guarded above).
    ray_aws._configure_key_pair(copy.deepcopy(prepared))
    for name, node_type in prepared["available_node_types"].items():
        assert node_type["node_config"].get("KeyName"), name


def _misspell_top_level_key(text: str) -> str:
    assert "\nhead_start_ray_commands:" in text
    return text.replace("\nhead_start_ray_commands:", "\nhead_start_ray_comands:")


def _misspell_node_types(text: str) -> str:
    assert "\navailable_node_types:" in text
    return text.replace("\navailable_node_types:", "\navailable_node_type:")


def _misspell_docker_key(text: str) -> str:
    assert "\n  run_options:" in text
    return text.replace("\n  run_options:", "\n  run_option:", 1)


def _fractional_node_gpu(text: str) -> str:
    cfg = load(text)
    next(iter(worker_types(cfg).values()))["resources"]["GPU"] = 0.5  # must be an integer
    return yaml.safe_dump(cfg)


def _unknown_head_type(text: str) -> str:
    cfg = load(text)
    cfg["head_node_type"] = "ray.head.missing"
    return yaml.safe_dump(cfg)


@pytest.mark.parametrize(
    "break_config, error",
    [
        (_misspell_top_level_key, jsonschema.ValidationError),
        (_misspell_node_types, jsonschema.ValidationError),
        (_misspell_docker_key, jsonschema.ValidationError),
        (_fractional_node_gpu, jsonschema.ValidationError),
        (_unknown_head_type, ValueError),
    ],
    ids=["top-level-key", "node-types-key", "docker-key", "fractional-node-gpu", "head-type"],
)
def test_ray_validation_rejects_broken_copies(offline, break_config, error):
    broken = break_config(raw_text())
    with pytest.raises(error):
        ray_prepare_and_validate(load(broken))


def test_explicit_empty_setup_commands_keep_ray_defaults_out(prepared):
    # Omitted keys are filled from Ray's AWS defaults, whose setup_commands pip-install a
    # Ray nightly wheel. Everything must come from the image instead.
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands"):
        assert prepared[key] == [], key
    for cmd in all_commands(prepared):
        assert "pip install" not in cmd, cmd


def test_shell_commands_are_valid_bash(prepared):
    for cmd in all_commands(prepared):
        result = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
        assert result.returncode == 0, f"bash syntax error in {cmd!r}: {result.stderr}"


# ----------------------------------------------------------------- resources / scheduling

TRIAL = {"CPU": 2, "GPU": 0.5}  # a trial with search-space `resources: {cpu: 2, gpu: 0.5}`


def test_head_runs_no_trials(prepared):
    from ray.autoscaler._private.resource_demand_scheduler import _fits

    head = head_type(prepared)
    assert head["resources"].get("CPU") == 0
    assert head["resources"].get("GPU", 0) == 0
    assert head["max_workers"] == 0
    assert not _fits(dict(head["resources"]), {"CPU": 1})
    assert not _fits(dict(head["resources"]), TRIAL)
    # Ray exports the node type's resources to `ray start` (RAY_OVERRIDE_RESOURCES); the
    # flags repeat them so the head stays at 0 CPUs even if started by hand.
    start = next(c for c in prepared["head_start_ray_commands"] if "ray start" in c)
    assert "--num-cpus=0" in start and "--num-gpus=0" in start
    # MLflow runs on the head only.
    assert not any("mlflow server" in c for c in prepared["worker_start_ray_commands"])


def test_worker_types_declare_gpus_spot_and_on_demand(prepared):
    workers = worker_types(prepared)
    assert workers, "no worker node types"
    markets = set()
    for name, node_type in workers.items():
        res = node_type["resources"]
        assert isinstance(res.get("GPU"), int) and res["GPU"] >= 1, name
        assert res.get("CPU", 0) >= 1, name
        assert node_type["min_workers"] == 0, f"{name}: GPU nodes should scale to zero"
        assert node_type["max_workers"] >= 1, name
        assert re.match(r"^(g\d|p\d)", node_type["node_config"]["InstanceType"]), name
        options = node_type["node_config"].get("InstanceMarketOptions", {})
        markets.add(options.get("MarketType", "on-demand"))
    assert markets == {"spot", "on-demand"}
    assert sum(t["max_workers"] for t in workers.values()) <= prepared["max_workers"]


def _scheduler_nodes_for(prepared, demands, existing):
    from ray.autoscaler._private.node_provider_availability_tracker import (
        NodeAvailabilitySummary,
    )
    from ray.autoscaler._private.resource_demand_scheduler import (
        _default_utilization_scorer,
        get_nodes_for,
    )

    scorer = partial(
        _default_utilization_scorer,
        node_availability_summary=NodeAvailabilitySummary(node_availabilities={}),
    )
    to_add, unfulfilled = get_nodes_for(
        prepared["available_node_types"],
        existing,
        prepared["head_node_type"],
        prepared["max_workers"],
        demands,
        scorer,
    )
    return dict(to_add), unfulfilled


def test_autoscaler_launches_spot_first_with_two_half_gpu_trials_per_node(prepared):
    workers = worker_types(prepared)
    spot = next(n for n, t in workers.items() if t["node_config"].get("InstanceMarketOptions"))
    on_demand = next(n for n in workers if n != spot)
    head = {prepared["head_node_type"]: 1}

    to_add, unfulfilled = _scheduler_nodes_for(prepared, [dict(TRIAL)] * 4, head)
    assert to_add == {spot: 2} and not unfulfilled

    full_spot = {**head, spot: workers[spot]["max_workers"]}
    to_add, unfulfilled = _scheduler_nodes_for(prepared, [dict(TRIAL)] * 2, full_spot)
    assert to_add == {on_demand: 1} and not unfulfilled


# ---------------------------------------------------------------------------- security


def test_only_ssh_is_open_to_the_world(prepared, ray_aws):
    for name, node_type in prepared["available_node_types"].items():
        # Otherwise Ray would not manage the group and this check could not see its rules.
        assert "SecurityGroupIds" not in node_type["node_config"], name
        assert "NetworkInterfaces" not in node_type["node_config"], name

    extra = prepared["provider"].get("security_group", {}).get("IpPermissions", [])
    # The exact rules Ray's AWS bootstrap authorizes on the security group it creates.
    rules = ray_aws._create_default_inbound_rules(["sg-cluster"], extra)
    open_to_world = [
        rule
        for rule in rules
        if {r.get("CidrIp") for r in rule.get("IpRanges", [])} & WORLD
        or {r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])} & WORLD
        or rule.get("PrefixListIds")
    ]
    assert open_to_world, "Ray's default SSH rule is expected"
    for rule in open_to_world:
        assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 22, 22), rule

    head_start = next(c for c in prepared["head_start_ray_commands"] if "ray start" in c)
    assert "--dashboard-host=127.0.0.1" in head_start


def test_token_authentication_on_every_node(prepared):
    from ray._private.authentication.authentication_token_setup import AUTH_MODE_ENV_VAR

    assert AUTH_MODE_ENV_VAR == "RAY_AUTH_MODE"  # the installed Ray's switch
    options = prepared["docker"]["run_options"]  # shared by head and workers
    assert "--env=RAY_AUTH_MODE=token" in options
    token_path = next(
        o.split("=", 2)[2] for o in options if o.startswith("--env=RAY_AUTH_TOKEN_PATH=")
    )
    token_dir = os.path.dirname(token_path)
    assert token_dir in prepared["file_mounts"], "the token file must be synced to all nodes"
    for name, node_type in worker_types(prepared).items():
        assert "docker" not in node_type, f"{name} must not override the shared run_options"


# ------------------------------------------------------------------------------ MLflow


def test_mlflow_server_proxies_artifacts_from_a_database(prepared):
    cmd = mlflow_command(prepared)
    args = shlex.split(cmd.split("exec mlflow server", 1)[1].split("'", 1)[0])
    assert "--serve-artifacts" in args and "--no-serve-artifacts" not in args
    assert "--artifacts-destination" in args
    assert "--backend-store-uri" in args
    assert "--artifacts-only" not in args

    settings = {**prepared["metadata"]["change_me"], **prepared["metadata"]["options"]}
    assert settings["mlflow_artifacts_destination"].startswith("s3://")
    assert re.match(r"^(sqlite|postgresql|mysql|mssql)(\+\w+)?://", settings["mlflow_backend_store_uri"])
    # The sqlite file must sit on the head's persistent volume.
    if settings["mlflow_backend_store_uri"].startswith("sqlite"):
        mount_points = [
            o.split(":")[-1] for o in prepared["docker"]["head_run_options"] if o.startswith("--volume=")
        ]
        assert any(
            settings["mlflow_backend_store_uri"].startswith(f"sqlite:///{m}/") for m in mount_points
        ), (settings["mlflow_backend_store_uri"], mount_points)
    # Trials run on other machines: they get the driver's tracking URI, which must not be a
    # loopback address, so the server has to listen beyond localhost (inside the SG).
    assert settings["mlflow_host"] == "0.0.0.0"
    head_start = next(c for c in prepared["head_start_ray_commands"] if "ray start" in c)
    assert "MLFLOW_TRACKING_URI=" in head_start and "127.0.0.1:5000" not in head_start


# ----------------------------------------------------------------------------- Docker


def parse_dockerfile_from() -> tuple[str, str]:
    args: dict[str, str] = {}
    for line in DOCKERFILE.read_text().splitlines():
        line = line.strip()
        match = re.match(r"^ARG\s+(\w+)(?:=(.*))?$", line)
        if match:
            args[match.group(1)] = (match.group(2) or "").strip().strip('"')
        if line.startswith("FROM "):
            image = line.split()[1]
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], image)
            repo, _, tag = image.partition(":")
            return repo, tag
    raise AssertionError("no FROM line in cluster/Dockerfile")


def test_dockerfile_builds_on_official_ray_gpu_image_of_installed_version():
    repo, tag = parse_dockerfile_from()
    assert repo == "rayproject/ray", repo  # not the discontinued rayproject/ray-ml
    assert tag.startswith(f"{ray.__version__}-"), (tag, ray.__version__)
    assert re.search(r"-(gpu|cu\d+)$", tag), tag
    assert re.search(r"-py3\d+-", tag), tag

    text = DOCKERFILE.read_text()
    assert "ray-ml" not in "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
    assert re.search(r"COPY\b.*\bpyproject\.toml\b", text)
    assert re.search(r"COPY\b.*\bvae\b", text) and re.search(r"COPY\b.*\bsweeps\b", text)
    assert re.search(r"pip install\b[^\n]*-c /home/ray/ray-constraints\.txt \.", text)
    assert 'echo "ray==${RAY_VERSION}"' in text


def test_cluster_uses_a_custom_image_not_ray_ml(prepared):
    image = prepared["docker"]["image"]
    assert "ray-ml" not in image
    assert image == prepared["metadata"]["change_me"]["docker_image"]


# ---------------------------------------------------------------- one place to edit


def test_user_values_live_in_one_block_at_the_top():
    text = raw_text()
    lines = text.splitlines()
    start, end = metadata_block_lines(text)
    first_key = next(i for i, l in enumerate(lines) if re.match(r"^[A-Za-z_][\w-]*:", l))
    assert first_key == start, "`metadata:` must be the first key of cluster.yaml"

    marks = [i for i, l in enumerate(lines) if CHANGE_ME_MARK.search(l)]
    assert marks and all(start <= i < end for i in marks), [lines[i] for i in marks]

    cfg = load(text)
    change_me = cfg["metadata"]["change_me"]
    outside = "\n".join(lines[:start] + lines[end:])
    for key, value in change_me.items():
        assert str(value) not in outside, f"{key}={value!r} is repeated outside the block"
    for placeholder in ("123456789012", "CHANGE-ME", "change-me"):
        assert placeholder not in outside, placeholder

    # ... and the rest of the file uses them (through YAML aliases).
    assert cfg["provider"]["region"] == change_me["region"]
    assert cfg["provider"]["availability_zone"] == change_me["availability_zones"]
    assert cfg["docker"]["image"] == change_me["docker_image"]
    assert cfg["auth"]["ssh_private_key"] == change_me["ssh_private_key"]
    for name, node_type in cfg["available_node_types"].items():
        node_config = node_type["node_config"]
        assert node_config["ImageId"] == change_me["ami_id"], name
        assert node_config["KeyName"] == change_me["ssh_key_name"], name
        profile = (
            change_me["head_instance_profile_arn"]
            if name == cfg["head_node_type"]
            else change_me["worker_instance_profile_arn"]
        )
        assert node_config["IamInstanceProfile"]["Arn"] == profile, name


# --------------------------------------------------- the head's MLflow commands, for real


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_group(pid_file: Path) -> None:
    if not pid_file.exists():
        return
    pgid = int(pid_file.read_text())
    try:
        os.killpg(pgid, signal.SIGTERM)
        for _ in range(100):
            time.sleep(0.1)
            os.killpg(pgid, 0)
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.slow
def test_head_commands_start_mlflow_with_artifact_proxy(tmp_path):
    """Runs the head's MLflow start commands from cluster.yaml (local paths, free port)."""
    cfg = ray_prepare_and_validate(load())
    home = tmp_path / "home"
    home.mkdir()
    artifacts = tmp_path / "artifacts"
    cfg["metadata"]["change_me"]["mlflow_artifacts_destination"] = str(artifacts)
    cfg["metadata"]["options"]["mlflow_backend_store_uri"] = f"sqlite:///{home}/mlflow-data/mlflow.db"
    cfg["metadata"]["options"]["mlflow_host"] = "127.0.0.1"
    # Ray writes the head's copy of the config as JSON to ~/ray_bootstrap_config.yaml.
    (home / "ray_bootstrap_config.yaml").write_text(json.dumps(cfg))

    port = _free_port()
    env = {
        **os.environ,
        "HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "VAE_MLFLOW_PORT": str(port),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    commands = [
        c for c in cfg["head_start_ray_commands"] if not c.startswith("ray stop") and "ray start" not in c
    ]
    pid_file = home / ".mlflow-server.pid"

    def run_head_commands():
        for cmd in commands:
            done = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=180)
            assert done.returncode == 0, f"{cmd!r} failed:\n{done.stdout}\n{done.stderr}"

    try:
        run_head_commands()
        first_pid = int(pid_file.read_text())
        assert os.getpgid(first_pid) == first_pid  # own process group, killable as a whole

        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
        experiment_id = client.create_experiment("cluster-config-probe")
        assert client.get_experiment(experiment_id).artifact_location.startswith("mlflow-artifacts:")
        run = client.create_run(experiment_id)
        client.log_text(run.info.run_id, "hello", "probe.txt")
        client.set_terminated(run.info.run_id)
        uploaded = list(artifacts.rglob("probe.txt"))
        assert len(uploaded) == 1 and uploaded[0].read_text() == "hello"

        # Re-running the head commands (e.g. `ray up` again) replaces the server and the
        # run history survives in the database.
        run_head_commands()
        second_pid = int(pid_file.read_text())
        assert second_pid != first_pid
        with pytest.raises(ProcessLookupError):
            os.killpg(first_pid, 0)
        assert client.get_run(run.info.run_id).info.status == "FINISHED"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            assert response.status == 200
    finally:
        _kill_group(pid_file)
