"""The method: the model and its four ideas, as pure tensor code (no file or network I/O).

    model         KyamViT: class tokens + [REG], gated attention, the classifier heads
    gates         hard-concrete head gates, the L0 penalty, sparsity
    masking       random masking of absent-class tokens
    class_maps    class-attention maps: block/head aggregation
    pseudo_masks  class maps -> pseudo-masks (background threshold, CRF-free)
    metrics       classifier accuracy, mAP, confusion matrix / mIoU
"""
