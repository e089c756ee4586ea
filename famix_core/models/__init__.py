"""Models: CLIP backbones (open_clip, ``clip.py``), the dilated ModifiedResNet, the DeepLabv3+ head
(``deeplab.py``), freeze policies (``freeze.py``), the ``Segmenter`` (``segmenter.py``) and the download of
pretrained weights (``download.py``). Import the submodule you need: each one imports torch.
"""
