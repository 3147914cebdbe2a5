"""Neighbour search and point-set helpers in plain PyTorch (plus SciPy's k-d tree on CPU).

Every function works shape by shape: nothing one shape of a batch computes depends on
another. Coordinates are float32 in the model's unit cube; search runs outside autocast.
"""

import numpy as np
import torch
from scipy.spatial import cKDTree

CUDA_CHUNK = 4096  # query rows per cdist block on a GPU: (4096, N) distances at a time
LEAF_SIZE = 32  # k-d tree leaves: 100k queries for 16 neighbours 15% faster than with 16


def gather(values, index):
    """Rows of ``values`` (B, N, C) at ``index`` (B, M, k) long -> (B, M, k, C)."""
    batch, rows, channels = values.shape
    offsets = torch.arange(batch, device=index.device).view(-1, *[1] * (index.dim() - 1))
    flat = (index + offsets * rows).reshape(-1)
    return values.reshape(batch * rows, channels).index_select(0, flat).view(
        *index.shape, channels)


def tree_query(tree, query, k):
    """Indices (M, k) long of the k nearest tree points to ``query`` (M, 3) float32, nearest
    first (ties in the tree's order); k at most the tree's size."""
    _, index = tree.query(query.detach().float().cpu().numpy(), k=k,
                          workers=torch.get_num_threads())
    return torch.from_numpy(np.asarray(index, dtype=np.int64).reshape(len(query), k)).to(
        query.device)


@torch.autocast("cpu", enabled=False)
@torch.autocast("cuda", enabled=False)
def knn(query, points, k):
    """Indices (B, M, k') long of each query's k' = min(k, N) nearest ``points``, nearest
    first. query (B, M, 3), points (B, N, 3), both float32.

    On CPU a k-d tree per shape (exact distances); elsewhere ``torch.cdist`` in blocks of
    ``CUDA_CHUNK`` queries and ``topk``. Indices carry no gradient: differentiate through
    the offsets of the gathered points instead.
    """
    k = min(k, points.size(1))
    if query.device.type == "cpu":
        return torch.stack([tree_query(cKDTree(p.detach().numpy(), leafsize=LEAF_SIZE), q, k)
                            for q, p in zip(query, points)])
    blocks = [torch.cdist(query[:, start:start + CUDA_CHUNK].float(), points.float())
              .topk(k, dim=-1, largest=False, sorted=True).indices
              for start in range(0, query.size(1), CUDA_CHUNK)]
    return torch.cat(blocks, dim=1)

