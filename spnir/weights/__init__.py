"""Weight files spnir uses but does not train: ImageNet VGG feature spaces (:mod:`~spnir.weights.vgg`), the
learned layers of LPIPS and DISTS (:mod:`~spnir.weights.perceptual`), and the sha256 checksum spnir writes into
its own checkpoints (:mod:`~spnir.weights.checksum`)."""
