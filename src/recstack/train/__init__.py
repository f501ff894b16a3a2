"""The training loop: tensors on the device, batches sliced by index, bf16 autocast on CUDA, early stopping,
checkpoints and resume, out-of-fold mode, DDP under torchrun."""
