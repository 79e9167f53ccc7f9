"""Stand-ins for lesson 12's checks: preprocessings, confused_pairs and trained models, right and
wrong, written independently of mnist_course.checks.fashion.

A real model good enough for the bar takes minutes to train. :class:`LookupModel` reaches any
accuracy at once instead: it recognises each test image, as its correct preprocessing prepares
it, by a fingerprint (a fixed random projection of the input), and answers the true label for a
chosen share of them. An input prepared any other way matches no fingerprint, so a wrong
preprocessing fails the way it fails a real network, while the check cannot tell the difference.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


# --------------------------------------------------------------------------------------------
# Preprocessings: uint8 (N, 28, 28) -> model input
# --------------------------------------------------------------------------------------------

def preprocess(images):
    """The right one: float32 tensor (N, 1, 28, 28), Fashion-MNIST's mean and std."""
    x = torch.from_numpy(np.asarray(images)).float() / 255
    return ((x - FASHION_MEAN) / FASHION_STD).unsqueeze(1)


def preprocess_mnist(images):
    x = torch.from_numpy(np.asarray(images)).float() / 255
    return ((x - MNIST_MEAN) / MNIST_STD).unsqueeze(1)


def preprocess_unnormalised(images):
    return (torch.from_numpy(np.asarray(images)).float() / 255).unsqueeze(1)


def preprocess_not_scaled(images):
    x = torch.from_numpy(np.asarray(images)).float()
    return ((x - FASHION_MEAN) / FASHION_STD).unsqueeze(1)


def preprocess_no_channel(images):
    x = torch.from_numpy(np.asarray(images)).float() / 255
    return (x - FASHION_MEAN) / FASHION_STD


def preprocess_numpy(images):
    return ((np.asarray(images, np.float32) / 255 - FASHION_MEAN) / FASHION_STD)[:, None]


def preprocess_float64(images):
    x = torch.from_numpy(np.asarray(images)).double() / 255
    return ((x - FASHION_MEAN) / FASHION_STD).unsqueeze(1)


def preprocess_batch_stats(images):
    x = torch.from_numpy(np.asarray(images)).float() / 255
    return ((x - x.mean()) / x.std()).unsqueeze(1)


def preprocess_in_place(images):
    images[:, 0, 0] = 0                     # "cleans" a corner of the caller's array
    return preprocess(images)


# --------------------------------------------------------------------------------------------
# confused_pairs(cm, k)
# --------------------------------------------------------------------------------------------

def confused_pairs(cm, k=5, *, diagonal=False, one_way=False, unordered=False, ascending=False,
                   rank_one_way=False, in_place=False):
    cm = np.asarray(cm)
    if in_place:
        np.fill_diagonal(cm, 0)
    c = len(cm)
    if rank_one_way:
        cells = sorted(((cm[i, j], i, j) for i in range(c) for j in range(c) if i != j),
                       key=lambda t: (-t[0], t[1], t[2]))
        chosen, out = set(), []
        for _, i, j in cells:
            key = (min(i, j), max(i, j))
            if key not in chosen:
                chosen.add(key)
                out.append((*key, int(cm[i, j] + cm[j, i])))
        return out[:k]
    pairs = []
    for i in range(c):
        for j in range(i if diagonal else i + 1, c):
            count = cm[i, j] if one_way else cm[i, j] + cm[j, i]
            pairs.append((i, j, int(count)))
    if unordered:
        return pairs[:k]
    pairs.sort(key=lambda p: (p[2], p[0], p[1]) if ascending else (-p[2], p[0], p[1]))
    return pairs[:k]


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

class LookupModel(nn.Module):
    """Answers the true label of each test image it recognises, except for the share `wrong`
    of them (every image whose position modulo 100 is below 100 * wrong gets the next class).
    Unrecognised inputs get logits all equal (class 0 wins). `dropout` drops logits in training
    mode, as a dropout layer before the output would."""

    def __init__(self, images, labels, wrong=0.05, dropout=0.0):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("direction", torch.randn(28 * 28, generator=g, dtype=torch.float64))
        keys = self._keys(preprocess(images))
        order = torch.argsort(keys)
        answers = torch.as_tensor(labels, dtype=torch.int64).clone()
        flip = torch.arange(len(answers)) % 100 < round(100 * wrong)
        answers[flip] = (answers[flip] + 1) % 10
        self.register_buffer("keys", keys[order])
        self.register_buffer("answers", answers[order])
        self.scale = nn.Parameter(torch.tensor(5.0))
        self.drop = nn.Dropout(dropout)

    def _keys(self, x):
        return x.reshape(len(x), -1).double() @ self.direction

    def forward(self, x):
        keys = self._keys(x)
        pos = torch.searchsorted(self.keys, keys).clamp(max=len(self.keys) - 1)
        below = (pos - 1).clamp(min=0)
        near = torch.where((self.keys[below] - keys).abs() < (self.keys[pos] - keys).abs(),
                           below, pos)
        known = (self.keys[near] - keys).abs() < 1e-3
        logits = torch.zeros(len(x), 10, dtype=x.dtype)
        logits[known, self.answers[near][known]] = 1.0
        return self.drop(logits * self.scale)


class OneClass(nn.Module):
    """Always answers class 6 (Shirt), whatever the image: an untrained or broken network."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(10))
        with torch.no_grad():
            self.bias[6] = 1.0

    def forward(self, x):
        return self.bias.expand(len(x), 10)


class Argmax(nn.Module):
    """Returns the predicted class per image, (N,), instead of the 10 logits."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).argmax(dim=1)


class NineOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(28 * 28, 9)

    def forward(self, x):
        return self.fc(x.flatten(1))


def tiny_cnn():
    """An untrained CNN that needs (N, 1, 28, 28)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 26 * 26, 10))


def logistic_regression(images, labels, steps=300, batch=200, seed=0):
    """A linear classifier (N, 1, 28, 28) -> (N, 10) trained briefly with Adam on Fashion-MNIST
    training images prepared by `preprocess`: a real model below the bar (about 0.8)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = preprocess(images), torch.as_tensor(labels)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    for step in range(steps):
        idx = order[(step * batch) % len(x):][:batch]
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
