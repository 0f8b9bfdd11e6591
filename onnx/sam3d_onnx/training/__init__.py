"""Training: the paper's recipe (`recipe`), 2D pretraining (`pretrain2d`), synthetic lesions
(`lesions`), contrast phases (`phases`), training samples (`dataset`), the demo model's training
(`demo`) and the recipe on a labelled dataset folder (`finetune`)."""
