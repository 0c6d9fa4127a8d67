"""The compute kernels' public names: `kernels/cpu` and `kernels/cuda` each export exactly
these, with the same signatures (tests/test_backend.py)."""
COMPUTE = (
    "embedding_bag_forward",
    "embedding_bags_forward",
    "embedding_bag_grad",
    "embedding_sgd_update",
    "embedding_adagrad_update",
    "embedding_rowwise_adagrad_update",
    "embedding_bags_update",
    "dot_interaction_forward",
    "dot_interaction_backward",
    "bias_relu_forward",
    "bias_forward",
    "relu_bias_backward",
    "bias_backward",
)
