"""The proposal network's hash grid: nerfstudio's encoding exactly, its table read another way."""

from __future__ import annotations

import copy

import pytest
import torch
from nerfstudio.field_components.encodings import HashEncoding
from nerfstudio.fields.density_fields import HashMLPDensityField

from latentavatar_ns.model.hash_encoding import GatherHashEncoding, read_rows, with_gather_reads
from latentavatar_ns.model.sampling import ProposalSampler, tcnn_available

from test_sampling import AABB


def _points(n: int = 4096) -> torch.Tensor:
    """Random points in the unit cube, and points on grid vertices, where ceiling and floor agree."""
    torch.manual_seed(1)
    return torch.cat([torch.rand(n, 3), torch.randint(0, 17, (64, 3)) / 16.0])


# The proposal network's grid, and a 256-row table where the finer levels' cells collide in the hash.
@pytest.mark.parametrize("levels, max_res, log2_size", [(5, 128, 17), (3, 32, 8)])
def test_encoding_and_table_gradient_match_nerfstudio(levels: int, max_res: int, log2_size: int):
    torch.manual_seed(0)
    reference = HashEncoding(num_levels=levels, min_res=16, max_res=max_res, log2_hashmap_size=log2_size,
                             implementation="torch")
    gather = with_gather_reads(copy.deepcopy(reference))
    assert type(gather) is GatherHashEncoding and type(reference) is HashEncoding
    x = _points()
    weights = torch.randn(reference.get_out_dim())
    outputs = []
    for encoding in (reference, gather):
        out = encoding(x)
        (out * weights).sum().backward()
        outputs.append(out.detach())
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=1e-6)
    assert reference.hash_table.grad is not None and gather.hash_table.grad is not None
    assert reference.hash_table.grad.abs().sum() > 0
    torch.testing.assert_close(gather.hash_table.grad, reference.hash_table.grad, rtol=1e-5, atol=1e-4)


def test_both_row_reads_match_indexing_with_many_repeats():
    torch.manual_seed(0)
    rows = torch.cat([torch.zeros(5000, dtype=torch.long), torch.randint(0, 300, (5000,))])  # one row shared widely
    grad_out = torch.randn(len(rows), 2)
    grads = []
    for read in (lambda t: t[rows], lambda t: read_rows(t, rows, True), lambda t: read_rows(t, rows, False)):
        table = torch.arange(600.0).view(300, 2).requires_grad_()
        out = read(table)
        torch.testing.assert_close(out, table.detach()[rows])
        (out * grad_out).sum().backward()
        grads.append(table.grad)
    torch.testing.assert_close(grads[1], grads[0])
    torch.testing.assert_close(grads[2], grads[0])


@pytest.mark.skipif(tcnn_available(), reason="tiny-cuda-nn's encoding is used as it is")
def test_proposal_network_reads_through_gather_and_keeps_its_checkpoint_keys():
    torch.manual_seed(0)
    sampler = ProposalSampler(AABB, hash_max_res=32)
    torch.manual_seed(0)
    plain = HashMLPDensityField(AABB.clone(), num_layers=2, hidden_dim=16, num_levels=5, max_res=32,
                                log2_hashmap_size=17, implementation="torch")
    field = sampler.density_field
    assert type(field.encoding) is GatherHashEncoding and field.mlp_base[0] is field.encoding
    assert list(field.state_dict()) == list(plain.state_dict())
    for key, value in plain.state_dict().items():  # the same weights drawn: seeded runs are unchanged
        torch.testing.assert_close(field.state_dict()[key], value)
