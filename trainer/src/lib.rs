//! The residual model, the optimizer and the training loop.
