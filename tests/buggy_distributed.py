"""Correct and deliberately buggy versions of the data-parallel lesson's exercises.

Written here again, the way a learner might (not imported from the package or the notebook).
Each buggy version holds one typical mistake, chosen by name; the tests assert that the check
names it.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def make_shard_batch(bug: str | None = None):
    def shard_batch(x, y, k):
        n = len(x)
        if n % k and bug != "no_raise":
            raise ValueError(f"{n} samples do not split into {k} equal shards")
        m = n // k
        if bug == "no_raise":
            m = math.ceil(n / k)
        if bug == "interleaved":
            return [(x[i::k], y[i::k]) for i in range(k)]
        if bug == "unequal":     # an off-by-one in the upper bound: overlapping shards
            return [(x[i * m:(i + 1) * m + 1], y[i * m:(i + 1) * m + 1]) for i in range(k)]
        if bug == "labels_unsliced":
            return [(x[i * m:(i + 1) * m], y) for i in range(k)]
        if bug == "wrong_error":
            assert n % k == 0
        return [(x[i * m:(i + 1) * m], y[i * m:(i + 1) * m]) for i in range(k)]

    if bug == "wrong_error":
        def wrong_error(x, y, k):
            if len(x) % k:
                raise AssertionError("not divisible")
            return shard_batch(x, y, k)
        return wrong_error
    return shard_batch


def make_average_gradients(bug: str | None = None):
    def average_gradients(grads_list):
        k = len(grads_list)
        out = {}
        for name in grads_list[0]:
            if bug == "in_place":
                total = grads_list[0][name]
                for g in grads_list[1:]:
                    total += g[name]
                out[name] = total / k
                continue
            stacked = np.stack([g[name] for g in grads_list])
            if bug == "sum":
                out[name] = stacked.sum(axis=0)
            elif bug == "wrong_axis":
                out[name] = stacked.mean(axis=1)
            elif bug == "all_elements":
                out[name] = stacked.mean()
            elif bug == "first_only":
                out[name] = grads_list[0][name].copy()
            else:
                total = np.zeros_like(grads_list[0][name])
                for g in grads_list:
                    total = total + g[name]
                out[name] = total / k
        return out

    return average_gradients


def make_rank_indices(bug: str | None = None):
    def rank_indices(n, rank, world, seed=0, epoch=0):
        g = torch.Generator()
        g.manual_seed(seed if bug == "ignores_epoch" else seed + epoch)
        order = torch.randperm(n, generator=g).tolist()
        if bug == "unshuffled":
            order = list(range(n))
        total = math.ceil(n / world) * world
        if bug == "duplicates":      # always pads, even when n is already a multiple
            total = (n // world + 1) * world
        k = total - n
        pads = {"pad_last": [order[-1]] * k, "pad_first": [order[0]] * k,
                "pad_from_end": order[len(order) - k:], "pad_range": list(range(k)),
                "pad_zeros": [0] * k, "pad_n_mod_world": order[:n % world]}
        if bug == "drop_padding":
            padded = order
        elif bug in pads:
            padded = order + pads[bug]
        elif bug == "pad_in_front":
            padded = order[:k] + order
        else:
            padded = order + (order * math.ceil(total / n))[:total - n]
        if bug == "same_shard":
            return padded[0::world]
        if bug == "off_by_one":
            return padded[rank + 1::world]
        if bug == "contiguous":
            m = total // world
            return padded[rank * m:(rank + 1) * m]
        if bug == "drop_last":
            return order[:n - n % world][rank::world]
        return padded[rank::world]

    return rank_indices
