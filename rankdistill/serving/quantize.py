"""Reduced-precision tables: fp16, and int8 in fbgemm's fused 8-bit row-wise format.

int8 (``torch.ops.fbgemm.FloatToFused8BitRowwiseQuantized``, the format of torchrec's quantised inference
tables): each row ``x`` [D] is stored as D uint8 codes followed by its own fp32 scale and bias::

    bias  = min(x),   scale = (max(x) - min(x)) / 255
    q_j   = round((x_j - bias) / scale)          x̂_j = q_j · scale + bias     |x̂_j − x_j| <= scale / 2

so a row takes D + 8 bytes against 4·D in fp32: (D + 8) / (4·D) of the fp32 bytes (0.375× at D = 16,
0.266× at D = 128). fp16 is torch's round-to-nearest half precision: 2·D bytes per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import fbgemm_gpu  # noqa: F401  (registers torch.ops.fbgemm)
import torch

from rankdistill.errors import RankdistillError

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class QuantizedTable:
    """A table [N, D] at ``precision``; ``data`` is the stored form: float32 [N, D], float16 [N, D], or
    uint8 [N, D + 8] (fbgemm's fused rows: D codes, then the fp32 scale and bias as 4 bytes each)."""

    precision: str
    data: torch.Tensor
    dim: int

    @property
    def nbytes(self) -> int:
        """Bytes of the stored table."""
        return self.data.numel() * self.data.element_size()

    def dequantize(self) -> torch.Tensor:
        """The float32 table [N, D] a service scores with."""
        if self.precision == "int8":
            return torch.ops.fbgemm.Fused8BitRowwiseQuantizedToFloat(self.data)
        return self.data.float()

    def codes(self) -> torch.Tensor:
        """int8: the uint8 codes [N, D]."""
        return self.data[:, : self.dim]

    def scale_bias(self) -> torch.Tensor:
        """int8: each row's (scale, bias) as float32 [N, 2]."""
        return self.data[:, self.dim :].contiguous().view(torch.float32)


def quantize(table: torch.Tensor, precision: str) -> QuantizedTable:
    """table float32 [N, D] -> the table stored at ``precision`` (fp32, fp16 or int8)."""
    if precision not in PRECISIONS:
        raise RankdistillError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
    table = table.detach().to("cpu", torch.float32).contiguous()
    if table.dim() != 2:
        raise ValueError(f"table must be [N, D], got shape {tuple(table.shape)}")
    if precision == "int8":
        return QuantizedTable(precision, torch.ops.fbgemm.FloatToFused8BitRowwiseQuantized(table), table.shape[1])
    return QuantizedTable(precision, table.half() if precision == "fp16" else table, table.shape[1])


def from_parts(codes: torch.Tensor, scale_bias: torch.Tensor) -> QuantizedTable:
    """An int8 table from its codes uint8 [N, D] and (scale, bias) float32 [N, 2] (as :meth:`codes` and
    :meth:`scale_bias` give them): the fused rows again."""
    fused = torch.cat([codes.to(torch.uint8), scale_bias.to(torch.float32).contiguous().view(torch.uint8)], dim=1)
    return QuantizedTable("int8", fused, codes.shape[1])


def row_bytes(dim: int, precision: str) -> int:
    """Bytes of one stored row of ``dim`` numbers."""
    return {"fp32": 4 * dim, "fp16": 2 * dim, "int8": dim + 8}[precision]
