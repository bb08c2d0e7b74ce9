"""Csr: per-user item lists as two tensors (indptr [U+1], indices [nnz]), the layout every stage shares."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Csr:
    indptr: torch.Tensor  # int64 [n_rows + 1]
    indices: torch.Tensor  # int64 [nnz], column (item) indices, sorted within each row
    n_cols: int

    @classmethod
    def from_pairs(cls, rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> "Csr":
        order = np.lexsort((cols, rows))
        counts = np.bincount(rows, minlength=n_rows)
        indptr = np.zeros(n_rows + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(torch.from_numpy(indptr), torch.from_numpy(np.ascontiguousarray(cols[order], dtype=np.int64)), n_cols)

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return len(self.indices)

    def lengths(self) -> torch.Tensor:
        """int64 [n_rows]: entries per row."""
        return self.indptr[1:] - self.indptr[:-1]

    def rows(self) -> torch.Tensor:
        """int64 [nnz]: the row of every entry."""
        return torch.repeat_interleave(torch.arange(self.n_rows), self.lengths())

    def block(self, r0: int, r1: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(row offsets within the block [m], columns [m]) of the entries of rows r0..r1-1."""
        a, b = int(self.indptr[r0]), int(self.indptr[r1])
        lengths = self.indptr[r0 + 1 : r1 + 1] - self.indptr[r0:r1]
        return torch.repeat_interleave(torch.arange(r1 - r0), lengths), self.indices[a:b]

    def to(self, device: torch.device | str) -> "Csr":
        return Csr(self.indptr.to(device), self.indices.to(device), self.n_cols)

    def union(self, other: "Csr") -> "Csr":
        rows = torch.cat([self.rows(), other.rows()]).numpy()
        cols = torch.cat([self.indices, other.indices]).numpy()
        return Csr.from_pairs(rows, cols, self.n_rows, self.n_cols)
