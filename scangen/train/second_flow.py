"""The second data flow of the batched trainer: ScanGen items and their losses, per member.

For the members with a second flow (ScanGen and/or the DANN adversary), each draws its own batch of
K specimens (`ScanGenSampler`) and the items are built at the member's `scangen_level` (see
`scangen.train.trainer.scangen_embeddings` for the definitions): members of one level share one
batched phi pass over their padded items. The loss of member a is
    lam_a * scangen_loss(z_a, ...) + adversary_weight_a * adversary_a.loss(z_a, scanner_a)
computed member by member in float32 (a few dozen items each).
"""

from __future__ import annotations

import torch
from torch import Tensor

from scangen.losses import scangen_loss
from scangen.train.batching import BagTensors, collate
from scangen.train.stacked import StackedModel


def _pad_rows(items: list[Tensor]) -> Tensor:
    """(n_a, D) items per member -> (A, n, D) zero-padded."""
    n = max(t.shape[0] for t in items)
    out = items[0].new_zeros((len(items), n, items[0].shape[1]))
    for a, t in enumerate(items):
        out[a, : t.shape[0]] = t
    return out


def level_items(stack: StackedModel, members: list, rows: list[int], batches: list, bt: BagTensors,
                level: str, device: torch.device) -> list[Tensor]:
    """Projected items z_a (n_a, H) of members (stack rows `rows`) at one ScanGen level, and the
    batches' labels expanded to items (patch level): returns [z_a] and fills batch labels in place."""
    gens = [m.gen_dev for m in members]
    p = stack.subset(rows)
    if level == "bag":
        xs, masks = [], []
        for mem, batch in zip(members, batches):
            x, mask = collate(bt, batch.positions, mem.config.max_patches_train, mem.gen_store)
            xs.append(x), masks.append(mask)
        w = max(x.shape[0] for x in xs)
        n = max(x.shape[1] for x in xs)
        x_all = xs[0].new_zeros((len(xs), w, n, xs[0].shape[2]))
        m_all = masks[0].new_zeros((len(xs), w, n))
        for a, (x, m) in enumerate(zip(xs, masks)):
            x_all[a, : x.shape[0], : x.shape[1]] = x
            m_all[a, : m.shape[0], : m.shape[1]] = m
        drops = stack.dropout_masks([tuple(m.shape) for m in masks], (w, n), gens, device)
        h = stack.phi(p, x_all.reshape(len(xs), w * n, -1), drops).reshape(len(xs), w, n, -1)
        h = torch.where(m_all[..., None], h, torch.zeros((), dtype=h.dtype, device=h.device))
        z = h.sum(dim=2) / m_all.sum(dim=2, keepdim=True).clamp(min=1).to(h.dtype)
        return [z[a, : x.shape[0]] for a, x in enumerate(xs)]
    items = []
    for a, (mem, batch) in enumerate(zip(members, batches)):
        if level == "slide":
            items.append(bt.means[torch.as_tensor(batch.positions, device=bt.device)])
            continue
        x, mask = collate(bt, batch.positions, mem.config.scangen_patches, mem.gen_store)
        counts = mask.sum(dim=1).cpu()
        items.append(x[mask])
        batches[a] = type(batch)(batch.positions, batch.specimen.repeat(counts.numpy()), batch.scanner.repeat(counts.numpy()))
    drops = stack.dropout_masks([(t.shape[0],) for t in items], (max(t.shape[0] for t in items),), gens, device)
    z = stack.phi(p, _pad_rows(items), drops)
    return [z[a, : t.shape[0]] for a, t in enumerate(items)]


def second_flow_losses(stack: StackedModel, members: list, rows: list[int], bt: BagTensors,
                       device: torch.device, autocast_ctx) -> list[tuple[Tensor, Tensor, Tensor]]:
    """(loss, weighted attraction, weighted repulsion) per member with a second flow, in order."""
    batches = [m.second.next() for m in members]
    z_all: list[Tensor | None] = [None] * len(members)
    for level in dict.fromkeys(m.config.scangen_level for m in members):
        idx = [i for i, m in enumerate(members) if m.config.scangen_level == level]
        sub = [batches[i] for i in idx]
        with autocast_ctx():
            zs = level_items(stack, [members[i] for i in idx], [rows[i] for i in idx], sub, bt, level, device)
        for i, b, z in zip(idx, sub, zs):
            batches[i], z_all[i] = b, z
    out = []
    for mem, batch, z in zip(members, batches, z_all):
        cfg = mem.config
        z = z.float()  # distances near 0 need full precision (bf16 would erase the attraction term)
        spec = torch.as_tensor(batch.specimen, device=device)
        scan = torch.as_tensor(batch.scanner, device=device)
        zero = z.sum() * 0.0
        loss, att, rep = zero, zero.detach(), zero.detach()
        if cfg.use_scangen:
            sg, parts = scangen_loss(z, spec, scan, cfg.alpha, cfg.margin, distance=cfg.scangen_distance,
                                     pair_norm=cfg.scangen_pair_norm, return_terms=True)
            if parts["n_att"] == 0 or parts["n_rep"] == 0:
                raise RuntimeError(f"ScanGen batch without both pair kinds (|P|={parts['n_att']}, |N|={parts['n_rep']})")
            loss = loss + cfg.lam * sg
            att, rep = parts["attraction"].detach(), parts["repulsion"].detach()
        if mem.adversary is not None:
            loss = loss + cfg.adversary_weight * mem.adversary.loss(z, scan)
        out.append((loss, att, rep))
    return out
