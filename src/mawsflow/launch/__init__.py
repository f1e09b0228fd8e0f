"""Training launchers: run a `LaunchSpec` locally under torchrun, or on Kubernetes as a
Kubeflow PyTorchJob or Trainer v2 TrainJob, and wait for it (`mawsflow launch`)."""
