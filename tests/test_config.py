import pytest
import yaml

from vae.config import ConfigError, VAEConfig, load_config
from vae.config_fields import field_spec


def test_defaults_validate_and_round_trip_through_yaml(tmp_path):
    config = VAEConfig()
    path = tmp_path / "c.yaml"
    path.write_text(config.to_yaml())
    assert load_config(path) == config


def test_file_then_overrides_merge_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"loss": {"kl": {"weight": 0.5, "free_bits": 0.1}},
                                    "model": {"latent_dim": 8}}))
    config = load_config(path, ["loss.kl.weight=1e-3", "model.strides=[2,4]",
                                "model.channel_multipliers=[1,2]"])
    assert config.loss.kl.weight == pytest.approx(1e-3)
    assert config.loss.kl.free_bits == pytest.approx(0.1)  # from the file, untouched by overrides
    assert config.model.latent_dim == 8
    assert config.model.hop_length == 8


@pytest.mark.parametrize("override, key, expected", [
    ("loss.kl.weght=1", "loss.kl.weght", "unknown key"),
    ("loss.kl.weight=-1", "loss.kl.weight", "greater than or equal to 0"),
    ("model.activation=relu", "model.activation", "'elu' or 'snake'"),
    ("trainer.max_steps=abc", "trainer.max_steps", "valid integer"),
    ("adversarial.discriminators=[mpd,foo]", "adversarial.discriminators", "'msd', 'mpd'"),
    ("model.strides=[2,4,8]", "model", "same length"),
    ("loss.mel.n_mels=[10]", "loss.mel", "same length"),
    ("adversarial.multiband.bands=[[0.5,0.2]]", "adversarial.multiband", "low < high"),
    ("data.sources=[mixture,guitar]", "data.sources", "'vocals'"),
])
def test_bad_values_name_the_key_and_the_expectation(override, key, expected):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    message = str(info.value)
    assert key in message and expected in message
    assert "command-line overrides" in message


def test_errors_in_a_file_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("loss:\n  kl:\n    weigth: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*\n.*loss\.kl\.weigth: unknown key"):
        load_config(path)


def test_all_errors_are_reported_together():
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["loss.kl.weight=-1", "optim.lr=0", "model.kernel_size=0"])
    assert "3 invalid" in str(info.value)


def test_missing_file_and_non_mapping_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_override_accepts_a_mapping_of_dotted_paths():
    config = VAEConfig().override({"loss.kl.weight": 0.25, "adversarial.enabled": True})
    assert config.loss.kl.weight == 0.25 and config.adversarial.enabled


def test_field_spec_describes_leaves_and_rejects_typos():
    spec = field_spec(VAEConfig, "loss.kl.weight")
    assert spec.kind == "float" and spec.ge == 0
    assert field_spec(VAEConfig, "adversarial.loss_type").choices == ("hinge", "least_squares")
    assert field_spec(VAEConfig, "trainer.max_steps").kind == "int"
    assert field_spec(VAEConfig, "adversarial.enabled").kind == "bool"
    with pytest.raises(ConfigError, match="no key 'wieght' under loss.kl"):
        field_spec(VAEConfig, "loss.kl.wieght")
    with pytest.raises(ConfigError, match="is a section"):
        field_spec(VAEConfig, "loss.kl")
    with pytest.raises(ConfigError, match="is a value, not a section"):
        field_spec(VAEConfig, "loss.kl.weight.x")


def test_registered_names_are_the_choices_search_spaces_see():
    from vae.data.registry import DATA_SOURCES
    from vae.discriminators.registry import DISCRIMINATORS

    names = field_spec(VAEConfig, "adversarial.discriminators")
    assert names.kind == "list" and names.choices == tuple(DISCRIMINATORS)
    assert field_spec(VAEConfig, "data.source").choices == tuple(DATA_SOURCES)
    assert field_spec(VAEConfig, "adversarial.mpd.periods").kind == "list"  # sections mounted
    with pytest.raises(ConfigError, match=r"adversarial.discriminators.1: Input should be 'msd', 'mpd'"):
        VAEConfig().override({"adversarial.discriminators": ["mpd", "hifigan"]})


def test_flat_view_has_one_dotted_key_per_leaf():
    flat = VAEConfig().flat()
    assert flat["loss.kl.weight"] == VAEConfig().loss.kl.weight
    assert all(not isinstance(v, dict) for v in flat.values())
