"""Model resolution: registry names, shape stand-ins built locally, clear errors."""

import pytest

from services.models.resolve import ModelError, registry, resolve


def test_registry_holds_the_studys_twelve_models_in_three_size_categories():
    models = registry()
    assert len(models) == 12
    assert sorted({m["size_category"] for m in models.values()}) == [1, 2, 3]
    spec = resolve("phi2", build=False)
    assert (spec.kind, spec.source, spec.size_category, spec.trust_remote_code) == ("hub", "microsoft/phi-2", 3, False)


def test_a_shape_stand_in_has_the_real_architectures_size(tmp_path, monkeypatch):
    monkeypatch.setenv("WATTSERVE_CACHE", str(tmp_path))
    spec = resolve("shape:codeparrot/codeparrot-small", progress=lambda m: None)
    assert spec.kind == "shape" and spec.name.startswith("shape:")  # never mistaken for the trained model
    assert 105e6 < spec.params < 115e6  # codeparrot-small: ~110M parameters (GPT-2, 12 layers, 768 wide)
    again = resolve("shape:codeparrot/codeparrot-small", progress=lambda m: None)
    assert again.content_hash == spec.content_hash  # seeded: built once, the same thing every time


@pytest.mark.parametrize("name, message", [("shape:nobody/nothing", "no shape config"), ("???", "unknown model"),
                                           ("", "MODEL is empty")])
def test_unknown_models_say_what_is_accepted(name, message):
    with pytest.raises(ModelError, match=message):
        resolve(name, build=False)
