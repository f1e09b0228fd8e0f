"""mawsflow: the MAWS recipe (MAE pre-pretraining, WSP, LiT, transfer) on Kubeflow Pipelines."""

__version__ = "0.1.0"
