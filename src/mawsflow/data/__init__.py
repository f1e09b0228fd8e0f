"""The data library shared by the training engine, the evaluations and the dataset build.

One module per concept, laid out as timm's `data/` is:

- `manifest`: a pretraining dataset's `manifest.json` and the shard sizes it implies;
- `shards`: reading shards, and the endless seeded streams of samples the loader serves;
- `members`: what a sample's tar members are (image extensions, corrupt samples);
- `transforms`: image augmentation, evaluation resizing and normalisation, with their constants;
- `decoders`: raw samples into the tensors a task trains on;
- `loader`: the resumable training loader over streams;
- `eval_shards`: the evaluation-dataset format (classes, splits, shards), read and written;
- `eval_loader`: evaluation splits as a torch dataset;
- `fashion_mnist`: Fashion-MNIST's IDX files and class names;
- `hashtags`, `captions`: finding hashtags in captions, and the caption text LiT trains on.

`manifest`, `shards`, `members`, `eval_shards`, `fashion_mnist`, `hashtags` and `captions`
import no torch: the CPU-only steps (dataset build, prepare-eval, demo corpus) run in images
without it.
"""
