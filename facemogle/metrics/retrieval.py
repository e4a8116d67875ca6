"""How well a CLIP matches images to their own captions (the small evaluator CLIP's quality).

    pairwise_accuracy          share of images whose own caption scores above a random other image's caption
    recall_at_{k}_of_{group}   image->text recall@k among consecutive groups of `group` images and their captions
    retrieval_groups           how many whole groups the images fill (recall is NaN when none)

Scores are cosine similarities of the embeddings. Another face's caption identical to an image's own (the
synthetic set's descriptions repeat; the same embedding) is the same answer, not a competitor: it is left
out of that image's candidates. States are the embeddings themselves (cat across ranks).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.retrieval import RetrievalRecall
from torchmetrics.utilities import dim_zero_cat


class CaptionRetrieval(Metric):
    """update(image (b, d), text (b, d)) with row i of each from the same face; compute() -> dict of scores."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, top_k: Sequence[int] = (1, 5), group_size: int = 100, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if group_size < 2 or any(k < 1 or k > group_size for k in top_k):
            raise ValueError(
                f"need group_size >= 2 and each top_k in 1..group_size, got {group_size}, {top_k}"
            )
        self.top_k, self.group_size, self.seed = tuple(top_k), group_size, seed
        self.add_state("image", default=[], dist_reduce_fx="cat")
        self.add_state("text", default=[], dist_reduce_fx="cat")

    def update(self, image: torch.Tensor, text: torch.Tensor) -> None:
        if image.shape != text.shape or image.dim() != 2:
            raise ValueError(
                f"expected image and text embeddings (b, d) alike, got {image.shape}, {text.shape}"
            )
        self.image.append(image.float())
        self.text.append(text.float())

    def compute(self) -> dict[str, torch.Tensor | int]:
        text = F.normalize(dim_zero_cat(self.text), dim=-1)
        sim = F.normalize(dim_zero_cat(self.image), dim=-1) @ text.T
        n = sim.shape[0]  # sim[i, j]: image i against caption j
        scores: dict[str, torch.Tensor | int] = {"pairwise_accuracy": self._pairwise(sim)}
        groups = n // self.group_size
        for k in self.top_k:
            scores[f"recall_at_{k}_of_{self.group_size}"] = self._recall(sim, text, k, groups)
        scores["retrieval_groups"] = groups
        return scores

    def _pairwise(self, sim: torch.Tensor) -> torch.Tensor:
        n = sim.shape[0]
        if n < 2:
            return torch.tensor(float("nan"))
        g = torch.Generator().manual_seed(self.seed)
        other = (torch.arange(n) + torch.randint(1, n, (n,), generator=g)) % n  # a random other image
        return (sim.diagonal() > sim[torch.arange(n), other].to(sim.device)).float().mean()

    def _recall(self, sim: torch.Tensor, text: torch.Tensor, k: int, groups: int) -> torch.Tensor:
        if groups == 0:
            return torch.tensor(float("nan"))
        g = self.group_size
        # the states are already gathered: syncing again would count each query once per rank
        recall = RetrievalRecall(top_k=k, sync_on_compute=False)
        own = torch.eye(g, dtype=torch.bool, device=sim.device)
        for start in range(0, groups * g, g):
            block = sim[start : start + g, start : start + g]  # (g queries, g captions)
            captions = text[start : start + g]
            candidate = own | ~(captions[:, None] == captions[None, :]).all(-1)  # (g, g)
            queries = torch.arange(start, start + g, device=sim.device)[:, None].expand(g, g)
            # retrieval_recall drops documents scored <= 0; shifted cosines (in float64, order kept) are > 0
            scores = block.double() + 2
            recall.update(scores[candidate], own[candidate], indexes=queries[candidate])
        return recall.compute()
