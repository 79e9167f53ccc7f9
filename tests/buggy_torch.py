"""Correct and deliberately buggy learner code for the PyTorch checks (lessons 06 and 07).

Each correct version is written here independently of the package; each bug is one typical
mistake, switched on by an option or a subclass, and named after it.
"""

from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------------------------
# read_idx
# --------------------------------------------------------------------------------------------


def _read_idx(path, *, order=">", skip_header=True, ndim=None, gz=True, count_check=True,
              magic_check=True, whole_buffer=False):
    name = str(path)
    opener = gzip.open if gz and name.endswith(".gz") else open
    with opener(path, "rb") as f:
        buf = f.read()
    magic = int.from_bytes(buf[:4], "big")
    if magic_check and magic not in (0x801, 0x803):
        raise ValueError(f"{name}: bad magic number {magic:#010x}")
    ndim = buf[3] if ndim is None else ndim
    header = 4 + 4 * ndim
    dims = struct.unpack(f"{order}{ndim}I", buf[4:header])
    size = math.prod(dims)
    if count_check and len(buf) - header != size:
        raise ValueError(f"{name}: {len(buf) - header} data bytes, the header says {size}")
    if whole_buffer:
        return np.frombuffer(buf, dtype=np.uint8).reshape(dims)
    offset = header if skip_header else 0
    return np.frombuffer(buf, dtype=np.uint8, count=size, offset=offset).reshape(dims)


def read_idx(path):
    return _read_idx(path)


def read_idx_sniffing(path):
    """Correct too: gzip recognised by its first bytes, the header parsed with NumPy."""
    with open(path, "rb") as f:
        buf = f.read()
    if buf[:2] == b"\x1f\x8b":
        buf = gzip.decompress(buf)
    if buf[:3] != b"\x00\x00\x08" or buf[3] not in (1, 3):
        raise ValueError("not an IDX file of uint8")
    dims = tuple(int(d) for d in np.frombuffer(buf, dtype=">u4", count=buf[3], offset=4))
    data = np.frombuffer(buf, dtype=np.uint8, offset=4 + 4 * buf[3])
    if data.size != math.prod(dims):
        raise ValueError(f"{data.size} bytes of data for shape {dims}")
    return data.reshape(dims).copy()


def read_idx_little_endian(path):
    return _read_idx(path, order="<")


def read_idx_header_not_skipped(path):
    return _read_idx(path, whole_buffer=True)


def read_idx_from_byte_0(path):
    return _read_idx(path, skip_header=False)


def read_idx_three_dims(path):
    return _read_idx(path, ndim=3)


def read_idx_gz_as_raw(path):
    return _read_idx(path, gz=False)


def read_idx_no_count_check(path):
    return _read_idx(path, count_check=False)


def read_idx_no_magic_check(path):
    return _read_idx(path, magic_check=False)


def read_idx_str_only(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        f.read()
    return _read_idx(path)


def read_idx_int64(path):
    return _read_idx(path).astype(np.int64)


def read_idx_assert(path):
    # checks with assert: AssertionError instead of ValueError
    try:
        return _read_idx(path)
    except ValueError as exc:
        raise AssertionError(str(exc)) from None


# --------------------------------------------------------------------------------------------
# IdxDataset (uses this module's read_idx, as a notebook's class uses the notebook's)
# --------------------------------------------------------------------------------------------


class IdxDataset(torch.utils.data.Dataset):
    def __init__(self, images_path, labels_path):
        self.images = read_idx(images_path)
        self.labels = read_idx(labels_path)
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self):
        return len(self.labels)

    def image(self, i):
        x = self.images[i].astype(np.float32)
        return torch.from_numpy((x / 255 - 0.1307) / 0.3081)[None]

    def __getitem__(self, i):
        return self.image(i), int(self.labels[i])


class IdxDatasetNotNormalised(IdxDataset):
    def image(self, i):
        return torch.from_numpy(self.images[i].astype(np.float32) / 255)[None]


class IdxDatasetScaledTwice(IdxDataset):
    def __init__(self, images_path, labels_path):
        super().__init__(images_path, labels_path)
        self.images = self.images / 255  # scaled here, and again in image()


class IdxDatasetNoChannel(IdxDataset):
    def image(self, i):
        return super().image(i)[0]


class IdxDatasetUint8(IdxDataset):
    def image(self, i):
        return torch.from_numpy(self.images[i].copy())[None]


class IdxDatasetFloat64(IdxDataset):
    def image(self, i):
        return super().image(i).double()


class IdxDatasetFloatLabels(IdxDataset):
    def __getitem__(self, i):
        return self.image(i), float(self.labels[i])


class IdxDatasetLenOffByOne(IdxDataset):
    def __len__(self):
        return len(self.labels) - 1


class IdxDatasetRereads(torch.utils.data.Dataset):
    def __init__(self, images_path, labels_path):
        self.paths = images_path, labels_path
        self.n = len(read_idx(labels_path))

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        images, labels = (read_idx(p) for p in self.paths)
        x = torch.from_numpy((images[i].astype(np.float32) / 255 - 0.1307) / 0.3081)
        return x[None], int(labels[i])


class IdxDatasetNoLengthCheck(IdxDataset):
    def __init__(self, images_path, labels_path):
        self.images = read_idx(images_path)
        self.labels = read_idx(labels_path)


class IdxDatasetPrecomputed(torch.utils.data.Dataset):
    """Correct too: everything converted to tensors once, labels as int64 tensors."""

    def __init__(self, images_path, labels_path):
        images, labels = read_idx(images_path), read_idx(labels_path)
        if len(images) != len(labels):
            raise ValueError("images and labels differ in number")
        x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1)
        self.x = (x / 255 - 0.1307) / 0.3081
        self.y = torch.from_numpy(labels.astype(np.int64))

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class IdxDatasetTensorLabels(IdxDataset):
    """Correct too: the label as a 0-dim int64 tensor."""

    def __getitem__(self, i):
        return self.image(i), torch.tensor(int(self.labels[i]))


# --------------------------------------------------------------------------------------------
# make_sequential
# --------------------------------------------------------------------------------------------


def make_sequential():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(576, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )


def make_sequential_nested():
    """Correct too: blocks nested in nn.Sequential, with other ways of writing the layers."""
    def block(c_in, c_out, pool):
        layers = [nn.Conv2d(c_in, c_out, kernel_size=(3, 3)), nn.ReLU(inplace=True)]
        return nn.Sequential(*layers, *([nn.MaxPool2d(2, 2)] if pool else []))

    return nn.Sequential(block(1, 32, True), block(32, 64, True), block(64, 64, False),
                         nn.Flatten(start_dim=1),
                         nn.Sequential(nn.Linear(576, 64), nn.ReLU(), nn.Linear(64, 10)))


def sequential_no_flatten():
    layers = list(make_sequential())
    del layers[8]
    return nn.Sequential(*layers)


def sequential_relu_last():
    return nn.Sequential(*make_sequential(), nn.ReLU())


def sequential_softmax_last():
    return nn.Sequential(*make_sequential(), nn.Softmax(dim=1))


def sequential_pool_after_conv3():
    # the second pooling comes after conv3 instead of after conv2
    layers = list(make_sequential())
    pool = layers.pop(5)
    layers.insert(7, pool)
    return nn.Sequential(*layers)


def sequential_module_not_sequential():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = make_sequential()

        def forward(self, x):
            return self.body(x)

    return Net()


# --------------------------------------------------------------------------------------------
# RegularizedCNN
# --------------------------------------------------------------------------------------------


class RegularizedCNN(nn.Module):
    def __init__(self, dropout=0.3):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 32, 3), nn.BatchNorm2d(32)
        self.conv2, self.bn2 = nn.Conv2d(32, 64, 3), nn.BatchNorm2d(64)
        self.conv3, self.bn3 = nn.Conv2d(64, 64, 3), nn.BatchNorm2d(64)
        self.fc1, self.bn4 = nn.Linear(576, 64), nn.BatchNorm1d(64)
        self.drop = nn.Dropout(self.rate(dropout))
        self.fc2 = nn.Linear(64, 10)

    def rate(self, dropout):
        return dropout

    def block(self, x, conv, bn):
        return F.relu(bn(conv(x)))

    def head(self, x):
        return self.fc2(self.drop(F.relu(self.bn4(self.fc1(x)))))

    def forward(self, x):
        x = F.max_pool2d(self.block(x, self.conv1, self.bn1), 2)
        x = F.max_pool2d(self.block(x, self.conv2, self.bn2), 2)
        x = self.block(x, self.conv3, self.bn3)
        return self.head(torch.flatten(x, 1))


class RegularizedCNNSequential(nn.Module):
    """Correct too: written with nn.Sequential blocks and nn.Dropout in the classifier."""

    def __init__(self, dropout=0.3):
        super().__init__()

        def block(c_in, c_out, pool):
            layers = [nn.Conv2d(c_in, c_out, 3), nn.BatchNorm2d(c_out), nn.ReLU()]
            return nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else []))

        self.features = nn.Sequential(block(1, 32, True), block(32, 64, True),
                                      block(64, 64, False), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(576, 64), nn.BatchNorm1d(64), nn.ReLU(),
                                        nn.Dropout(dropout), nn.Linear(64, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class RegularizedCNNDeclaredOutOfOrder(RegularizedCNN):
    """Correct too: the layers declared in another order than they are used."""

    def __init__(self, dropout=0.3):
        nn.Module.__init__(self)
        self.bn4, self.bn3, self.bn2, self.bn1 = (nn.BatchNorm1d(64), nn.BatchNorm2d(64),
                                                  nn.BatchNorm2d(64), nn.BatchNorm2d(32))
        self.fc2, self.fc1 = nn.Linear(64, 10), nn.Linear(576, 64)
        self.conv3, self.conv2, self.conv1 = (nn.Conv2d(64, 64, 3), nn.Conv2d(32, 64, 3),
                                              nn.Conv2d(1, 32, 3))
        self.drop = nn.Dropout(dropout)


class RegularizedCNNDropoutInEval(RegularizedCNN):
    def head(self, x):
        return self.fc2(F.dropout(F.relu(self.bn4(self.fc1(x))), self.drop.p))


class RegularizedCNNBNAfterReLU(RegularizedCNN):
    def block(self, x, conv, bn):
        return bn(F.relu(conv(x)))


class RegularizedCNNNoBN(RegularizedCNN):
    def __init__(self, dropout=0.3):
        super().__init__(dropout)
        self.bn1 = self.bn2 = self.bn3 = self.bn4 = nn.Identity()


class RegularizedCNNDropoutLast(RegularizedCNN):
    def head(self, x):
        return self.drop(self.fc2(F.relu(self.bn4(self.fc1(x)))))


class RegularizedCNNFunctionalBN(RegularizedCNN):
    """Batch norm with F.batch_norm and its own scale and shift, but no running statistics."""

    def __init__(self, dropout=0.3):
        super().__init__(dropout)
        for name in ("bn1", "bn2", "bn3", "bn4"):
            size = getattr(self, name).num_features
            setattr(self, name, None)
            setattr(self, f"{name}_w", nn.Parameter(torch.ones(size)))
            setattr(self, f"{name}_b", nn.Parameter(torch.zeros(size)))

    def norm(self, name):
        w, b = getattr(self, f"{name}_w"), getattr(self, f"{name}_b")
        return lambda x: F.batch_norm(x, None, None, w, b, training=True)

    def forward(self, x):
        x = F.max_pool2d(self.block(x, self.conv1, self.norm("bn1")), 2)
        x = F.max_pool2d(self.block(x, self.conv2, self.norm("bn2")), 2)
        x = self.block(x, self.conv3, self.norm("bn3"))
        x = F.relu(self.norm("bn4")(self.fc1(torch.flatten(x, 1))))
        return self.fc2(self.drop(x))


class RegularizedCNNKeepProbability(RegularizedCNN):
    def rate(self, dropout):
        return 1 - dropout


class RegularizedCNNFixedRate(RegularizedCNN):
    def rate(self, dropout):
        return 0.3


# issue 23: layers that act only in training mode (evaluation mode alone hides them)
def sequential_dropout_before_fc2():
    layers = list(make_sequential())
    layers.insert(11, nn.Dropout(0.5))
    return nn.Sequential(*layers)


def sequential_dropout2d_after_conv1():
    layers = list(make_sequential())
    layers.insert(2, nn.Dropout2d(0.25))
    return nn.Sequential(*layers)


def sequential_batchnorm_no_affine():
    layers = list(make_sequential())
    layers.insert(1, nn.BatchNorm2d(32, affine=False))   # no parameters: the count stays right
    return nn.Sequential(*layers)


def sequential_dropout_nested():
    model = make_sequential_nested()
    model[4].insert(2, nn.Dropout(0.3))
    return model


# issue 23: header offsets (where the sizes and the data start)
def _idx_buffer(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        buf = f.read()
    if buf[:3] != b"\x00\x00\x08" or buf[3] not in (1, 2, 3, 4):
        raise ValueError("not an IDX file of uint8")
    return buf, buf[3]


def _idx_from(buf, dims_at, ndim, data_at, count=True):
    dims = tuple(int(d) for d in np.frombuffer(buf, dtype=">u4", count=ndim, offset=dims_at))
    data = np.frombuffer(buf, dtype=np.uint8, offset=data_at)
    if count and data.size != math.prod(dims):
        raise ValueError(f"cannot read {data.size} bytes as shape {dims}")
    return data.reshape(dims).copy()


def read_idx_data_at_4_ndim(path):
    """The data offset forgets the magic number: 4 * ndim instead of 4 + 4 * ndim."""
    buf, ndim = _idx_buffer(path)
    return _idx_from(buf, 4, ndim, 4 * ndim, count=False)


def read_idx_data_at_4_plus_ndim(path):
    """The sizes counted in bytes: the data offset 4 + ndim instead of 4 + 4 * ndim."""
    buf, ndim = _idx_buffer(path)
    return _idx_from(buf, 4, ndim, 4 + ndim, count=False)


def read_idx_dims_at_0(path):
    """The sizes read from byte 0: the magic number taken for the first size."""
    buf, ndim = _idx_buffer(path)
    return _idx_from(buf, 0, ndim, 4 + 4 * ndim)


def read_idx_dims_at_8(path):
    """The sizes read one field late (from byte 8)."""
    buf, ndim = _idx_buffer(path)
    return _idx_from(buf, 8, ndim, 4 + 4 * ndim)


def read_idx_data_at_header_plus_4(path):
    """One field too many skipped: the data read from 8 + 4 * ndim."""
    buf, ndim = _idx_buffer(path)
    return _idx_from(buf, 4, ndim, 8 + 4 * ndim, count=False)
