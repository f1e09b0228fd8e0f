"""The training engine every training step runs on (MAE, WSP, LiT, finetuning).

Split by concern: `distributed` (torchrun, DDP/FSDP2, activation checkpointing), `optim`,
`schedule`, `data` (webdataset loading), `checkpoint`, `flops`, `task` (what a step plugs in)
and `trainer` (the loop).
"""
