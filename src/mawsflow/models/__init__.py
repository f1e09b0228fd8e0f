"""Image models: the paper's ViT family on timm, the MAE wrapper and the WSP classifier."""
