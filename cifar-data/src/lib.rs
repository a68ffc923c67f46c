//! CIFAR-100 and CIFAR-10 datasets.
