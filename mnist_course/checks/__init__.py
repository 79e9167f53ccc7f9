"""Check functions that the lesson exercises call.

Each ``check_*`` runs your function on several small cases and compares it with an independent
answer: ``torch.nn.functional`` with autograd (see ``mnist_course._oracle``), closed-form
formulas, or direct inspection. It never uses the course's own NumPy layers, so a bug there cannot
hide a bug in yours.

On success a check prints one line, e.g. ``✓ check_conv2d_forward: 6 cases, max rel. error
3.1e-12``. On failure it raises ``AssertionError`` that names the case (shapes, stride, pad),
shows how large the error is and, when the symptom is a typical one, suggests the likely bug.

The checks live in one module per part of the course; every public name is re-exported here, so
a lesson only ever writes ``checks.check_...``:

- :mod:`.data` (lesson 00): check_one_hot, check_train_val_split.
- :mod:`.mlp` (lesson 01): check_relu, check_linear, check_softmax_cross_entropy,
  check_numerical_gradient.
- :mod:`.conv` (lesson 02): check_conv2d_forward, check_conv2d_backward, check_maxpool2d.
- :mod:`.cnn` (lesson 03): check_init, check_cnn_forward, check_cnn_loss_and_grads.
- :mod:`.optim` (lessons 03 and 04): check_sgd, check_rmsprop, check_adam.
- :mod:`.regularization` (lesson 04): check_batchnorm2d, check_dropout.
- :mod:`.engine` (lesson 05, your own autograd on NumPy arrays): check_sum_to_size,
  check_primitives, check_backward, check_layer_ops, check_engine_forward.
- :mod:`.autograd` (lesson 06): check_torch_forward, check_sgd_step.
- :mod:`.torch_data` (lesson 06, your IDX reader and Dataset): check_read_idx, check_idx_dataset.
- :mod:`.torch_nn` (lesson 06, the course CNN as an ``nn.Module`` and an ``nn.Sequential``;
  lesson 07, with batch norm and dropout): check_my_cnn, check_sequential, check_regularized_cnn.
- :mod:`.torch_loops` (lesson 06, the training loop): check_train_one_epoch, check_evaluate,
  check_fit, check_checkpoint.
- :mod:`.experiments`: check_mean_std, check_step_decay, check_random_shift.
- :mod:`.handwriting` (lesson 06, digits drawn on a screen): check_center_of_mass.
- :mod:`.debugging` (lesson 10, when training goes wrong): check_loss_at_init,
  check_overfit_one_batch, check_shuffled_batches, check_make_preprocess, check_count_shared.
- :mod:`.distributed` (lesson 08, data parallelism): check_shard_batch,
  check_average_gradients, check_rank_indices.
- :mod:`.fashion` (lesson 12, Fashion-MNIST on your own): check_fashion_preprocess,
  check_confused_pairs, check_fashion_model (your trained model, measured on the test set).
- :mod:`._core`: the shared machinery (calling the learner's code, comparing, naming the bug).

Inputs are float64, so the tolerance is tight (relative error 1e-7). Results in float32 are
accepted with a looser tolerance (1e-3, measured against the largest value). The relative error
of one element is ``|a - b| / max(1e-8, |a| + |b|)``, as in :func:`mnist_course.gradcheck.rel_error`.
"""

from mnist_course.checks.autograd import check_sgd_step, check_torch_forward
from mnist_course.checks.cnn import check_cnn_forward, check_cnn_loss_and_grads, check_init
from mnist_course.checks.conv import check_conv2d_backward, check_conv2d_forward, check_maxpool2d
from mnist_course.checks.data import check_one_hot, check_train_val_split
from mnist_course.checks.debugging import (
    check_count_shared,
    check_loss_at_init,
    check_make_preprocess,
    check_overfit_one_batch,
    check_shuffled_batches,
)
from mnist_course.checks.distributed import (
    check_average_gradients,
    check_rank_indices,
    check_shard_batch,
)
from mnist_course.checks.engine import (
    check_backward,
    check_engine_forward,
    check_layer_ops,
    check_primitives,
    check_sum_to_size,
)
from mnist_course.checks.experiments import check_mean_std, check_random_shift, check_step_decay
from mnist_course.checks.fashion import (
    check_confused_pairs,
    check_fashion_model,
    check_fashion_preprocess,
)
from mnist_course.checks.handwriting import check_center_of_mass
from mnist_course.checks.mlp import (
    check_linear,
    check_numerical_gradient,
    check_relu,
    check_softmax_cross_entropy,
)
from mnist_course.checks.optim import check_adam, check_rmsprop, check_sgd
from mnist_course.checks.regularization import check_batchnorm2d, check_dropout
from mnist_course.checks.torch_data import check_idx_dataset, check_read_idx
from mnist_course.checks.torch_loops import (
    check_checkpoint,
    check_evaluate,
    check_fit,
    check_train_one_epoch,
)
from mnist_course.checks.torch_nn import check_my_cnn, check_regularized_cnn, check_sequential

__all__ = [
    "check_adam",
    "check_average_gradients",
    "check_backward",
    "check_batchnorm2d",
    "check_center_of_mass",
    "check_checkpoint",
    "check_cnn_forward",
    "check_cnn_loss_and_grads",
    "check_confused_pairs",
    "check_conv2d_backward",
    "check_conv2d_forward",
    "check_count_shared",
    "check_dropout",
    "check_engine_forward",
    "check_evaluate",
    "check_fashion_model",
    "check_fashion_preprocess",
    "check_fit",
    "check_idx_dataset",
    "check_init",
    "check_layer_ops",
    "check_linear",
    "check_loss_at_init",
    "check_make_preprocess",
    "check_maxpool2d",
    "check_mean_std",
    "check_my_cnn",
    "check_numerical_gradient",
    "check_one_hot",
    "check_overfit_one_batch",
    "check_primitives",
    "check_random_shift",
    "check_rank_indices",
    "check_read_idx",
    "check_regularized_cnn",
    "check_relu",
    "check_rmsprop",
    "check_sequential",
    "check_sgd",
    "check_sgd_step",
    "check_shard_batch",
    "check_shuffled_batches",
    "check_softmax_cross_entropy",
    "check_step_decay",
    "check_sum_to_size",
    "check_torch_forward",
    "check_train_one_epoch",
    "check_train_val_split",
]
