"""Generation limits: the study's max_length=128 counts the prompt; what cannot be served is refused."""

import pytest

from services.inference.configs import ServingConfig
from services.inference.engines import EngineSettings
from services.inference.service import InferenceService, InvalidRequest
from services.models.resolve import ModelSpec


@pytest.fixture
def service():
    s = InferenceService(ServingConfig.parse("torch-cpu"), ModelSpec("m", "local", "/nowhere"),
                         EngineSettings(threads=1))
    s.context = 512
    return s


def test_default_is_max_length_128_including_the_prompt(service):
    assert service.limits(12, None, None) == 116


def test_max_new_tokens_and_max_length(service):
    assert service.limits(12, 20, None) == 20
    assert service.limits(12, None, 40) == 28
    assert service.limits(12, 500, None) == 500


@pytest.mark.parametrize(
    "prompt_tokens, max_new, max_len, message",
    [
        (512, None, None, "context is 512"),
        (12, 501, None, "at most 500"),
        (12, None, 513, "exceeds the model's context"),
        (130, None, None, "counts the prompt"),
        (12, 5, 50, "not both"),
    ],
)
def test_refusals_say_what_is_wrong(service, prompt_tokens, max_new, max_len, message):
    with pytest.raises(InvalidRequest, match=message):
        service.limits(prompt_tokens, max_new, max_len)
