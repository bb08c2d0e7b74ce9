"""Reduced-precision tables (rankdistill.serving.quantize): fbgemm's fused 8-bit row-wise format and fp16."""

import pytest
import torch

from rankdistill.errors import RankdistillError
from rankdistill.serving.quantize import from_parts, quantize, row_bytes


def _table(n=6, d=16, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * 3


def test_int8_scale_and_bias_are_each_rows_range():
    x = torch.tensor([[1.0, 2, 3, 4, 5, 6, 7, 8]])
    sb = quantize(x, "int8").scale_bias()
    # bias = min(x) = 1, scale = (max - min) / 255 = 7 / 255
    assert sb[0, 1].item() == 1.0
    assert sb[0, 0].item() == pytest.approx(7 / 255, rel=1e-6)


def test_int8_round_trip_error_is_at_most_half_a_step():
    x = _table()
    q = quantize(x, "int8")
    step = (x.max(1).values - x.min(1).values) / 255  # [N]
    err = (q.dequantize() - x).abs().max(1).values
    assert (err <= step / 2 + 1e-6).all()


def test_int8_bytes_are_dim_plus_eight_per_row():
    q = quantize(_table(n=10, d=16), "int8")
    assert q.data.dtype == torch.uint8 and q.nbytes == 10 * (16 + 8) == 10 * row_bytes(16, "int8")
    assert row_bytes(16, "int8") / row_bytes(16, "fp32") == 0.375  # (16 + 8) / 64


def test_int8_at_dim_128_is_under_the_0_27_goal():
    assert row_bytes(128, "int8") / row_bytes(128, "fp32") == pytest.approx(136 / 512) and 136 / 512 <= 0.27


def test_constant_row_quantises_exactly():
    x = torch.full((1, 8), 0.5)
    assert torch.equal(quantize(x, "int8").dequantize(), x)


def test_fp16_is_torch_half_rounding_and_half_the_bytes():
    x = _table()
    q = quantize(x, "fp16")
    assert torch.equal(q.dequantize(), x.half().float()) and q.nbytes == x.numel() * 2


def test_fp32_is_the_table_itself():
    x = _table()
    assert torch.equal(quantize(x, "fp32").dequantize(), x)


def test_codes_and_scale_bias_rebuild_the_fused_rows():
    q = quantize(_table(), "int8")
    assert torch.equal(from_parts(q.codes(), q.scale_bias()).data, q.data)


def test_unknown_precision_is_refused():
    with pytest.raises(RankdistillError, match="int4"):
        quantize(_table(), "int4")
