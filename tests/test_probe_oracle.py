"""scripts/probe_oracle_code.py: the oracle encoder returns the code of the frame whose crop is nearest."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from probe_oracle_code import ExpressionOracle  # noqa: E402


def test_oracle_codes_the_nearest_frames_expression():
    torch.manual_seed(0)
    crops, expressions = torch.rand(6, 3, 16, 16), torch.randn(6, 4)
    oracle = ExpressionOracle(num_parameters=4, code_dim=8)
    oracle.set_frames(crops, expressions)
    noisy = crops[[4, 1, 1]] + 0.02 * torch.randn(3, 3, 16, 16)
    assert torch.allclose(oracle(noisy), oracle.linear(expressions[[4, 1, 1]]))


def test_oracle_without_frames_is_an_error():
    with pytest.raises(RuntimeError, match="set_frames"):
        ExpressionOracle(num_parameters=4, code_dim=8)(torch.rand(1, 3, 16, 16))
