"""Params validation catches, before any job, the slips that used to fail inside one, naming the key."""

from __future__ import annotations

import pytest

from helpers import base_params
from pipeline_lib.params import load
from pipeline_lib.runtime.errors import ParamsError


def _message(params: dict) -> str:
    with pytest.raises(ParamsError) as info:
        load.validate_params(params)
    return str(info.value)


def test_eval_per_class_beyond_the_test_set_names_the_key():
    params = base_params()
    params["splits"]["eval_per_class"] = 1001
    msg = _message(params)
    assert "'splits.eval_per_class' = 1001" in msg and "1000" in msg
    params["splits"]["eval_per_class"] = 1000
    load.validate_params(params)


def test_unlearn_per_class_beyond_the_train_set_names_the_key():
    params = base_params()
    params["splits"]["unlearn_per_class"] = 6001
    assert "'splits.unlearn_per_class'" in _message(params)


@pytest.mark.parametrize("model, width, heads", [("mae", "embed_dim", "num_heads"),
                                                 ("mae", "decoder_embed_dim", "decoder_num_heads"),
                                                 ("vqgan", "embed_dim", "num_heads"),
                                                 ("vqgan", "decoder_embed_dim", "decoder_num_heads")])
def test_heads_not_dividing_the_width_name_both_keys(model, width, heads):
    params = base_params()
    params["model"][model]["arch"][heads] = 3
    msg = _message(params)
    assert f"'model.{model}.arch.{heads}' = 3" in msg and f"'model.{model}.arch.{width}'" in msg


def test_norm_groups_not_dividing_unet_channels():
    params = base_params()
    params["model"]["diffusion"]["arch"]["norm_num_groups"] = 5
    assert "'model.diffusion.arch.norm_num_groups'" in _message(params)


@pytest.mark.parametrize("device", ["gpu", "cuda0", "tpu:0", "cuda:x"])
def test_unknown_device_names_the_key(device):
    params = base_params()
    params["runtime"]["device"] = device
    msg = _message(params)
    assert "'runtime.device'" in msg and device in msg


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:3", "mps"])
def test_known_devices_pass_without_the_hardware(device):
    params = base_params()
    params["runtime"]["device"] = device
    load.validate_params(params)
