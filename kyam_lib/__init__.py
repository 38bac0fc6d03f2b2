"""kyam: Know Your Attention Maps — class-token ViT with head gates for weakly-supervised segmentation.

Where each of the paper's ideas lives:

    class tokens + [REG]               kyam_lib.method.model       (KyamViT, TokenLayout)
    hard-concrete head gates + L0      kyam_lib.method.gates       (HeadGate, AlwaysOpen, l0_penalty, sparsity_rate)
    random masking of absent classes   kyam_lib.method.masking     (mask_absent_class_tokens)
    class-attention maps               kyam_lib.method.class_maps  (class_maps, gated_head_mean)
    pseudo-masks                       kyam_lib.method.pseudo_masks
    metrics (mIoU, accuracy, mAP)      kyam_lib.method.metrics

Around it: `train` (`train_step`, the one optimisation step, and the training loop), `run_data`
(`open_split`, the one way a run's dataset is opened), `evaluate` (pseudo-masks over whole splits),
`segmentation` (the downstream model), `data` (datasets), `experiments` (the comparisons the
notebooks run and report) and `apps` (the attention browser). The benchmark harness is `benchmarks/`, outside the package.
"""
