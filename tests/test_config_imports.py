"""The config schema is data: reading it imports no torch, and the registries' lazy classes resolve."""

import subprocess
import sys
from pathlib import Path

import pytest

from vae.config import VAEConfig
from vae.data.registry import DATA_SOURCES
from vae.discriminators.registry import DISCRIMINATORS

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numpy", "pytorch_lightning", "ray", "musdb", "soundfile")

IMPORT_CONFIG = f"""
import sys, time
start = time.perf_counter()
import vae.config
elapsed = time.perf_counter() - start
vae.config.load_config(overrides=["adversarial.mpd.periods=[2,3]", "data.folder.max_draws=2"])
loaded = [name for name in {HEAVY!r} if name in sys.modules]
assert not loaded, f"import vae.config imported {{loaded}}"
print(f"import vae.config: {{elapsed * 1000:.0f}} ms")
"""


# The search-space validator must fail fast on a malformed space, before Ray or torch is loaded:
# it reads only the schema and the metric table. Every shipped space and a misspelt key are checked.
VALIDATE_SPACES = f"""
import sys, time
from pathlib import Path
start = time.perf_counter()
import sweeps.space.schema
elapsed = time.perf_counter() - start
for path in sorted(Path("search_spaces").glob("*.yaml")):
    sweeps.space.schema.load_space(path)
try:
    sweeps.space.schema.load_space("search_spaces/smoke.yaml",
                                   overrides={{"params": {{"model.chanels": 1}}}})
except sweeps.space.schema.SpaceError:
    pass
else:
    raise AssertionError("a misspelt key passed the validator")
loaded = [name for name in {HEAVY!r} if name in sys.modules]
assert not loaded, f"import sweeps.space.schema imported {{loaded}}"
print(f"import sweeps.space.schema: {{elapsed * 1000:.0f}} ms")
"""


@pytest.mark.parametrize("script", [IMPORT_CONFIG, VALIDATE_SPACES],
                         ids=["vae.config", "sweeps.space.schema"])
def test_reading_the_schema_imports_no_torch_numpy_lightning_ray_or_audio_io(script):
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    print(proc.stdout.strip())  # the import time, for the record (-s shows it); nothing asserted


@pytest.mark.parametrize(("registry", "schema_section"), [
    (DISCRIMINATORS, VAEConfig.model_fields["adversarial"].annotation),
    (DATA_SOURCES, VAEConfig.model_fields["data"].annotation),
])
def test_every_lazy_entry_resolves_to_a_class_taking_the_mounted_section(registry, schema_section):
    for name, entry in registry.items():
        cls = entry.resolve()
        assert cls.config_section is entry.config_section, name
        if entry.config_section is None:
            assert name not in schema_section.model_fields, name
        else:
            assert schema_section.model_fields[name].annotation is cls.config_section, name
