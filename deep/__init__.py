"""deep: PyTorch CNN baselines on the idtfv manifest, written from ``torch.nn`` only (no torchvision, no downloads).

Modules
-------
- ``idtfv.deep.models``: ``MODELS`` (name -> ``ModelSpec``: builder + standard input) and ``build_model``; families:
  single-frame / late / early / slow fusion (Karpathy et al. 2014), two-stream (Simonyan & Zisserman 2014),
  TSN (Wang et al. 2016), C3D (Tran et al. 2015), I3D (Carreira & Zisserman 2017), Non-local (Wang et al. 2018),
  SlowFast (Feichtenhofer et al. 2019), TSM (Lin et al. 2019), TAM (Liu et al. 2021), CNN + LSTM (Donahue et al.
  2015).
- ``idtfv.deep.resnet`` / ``idtfv.deep.blocks``: 2-D / 3-D ResNet-10/18/34/50 from one table of temporal kernels; inflation.
- ``idtfv.deep.sampling``, ``idtfv.deep.transforms``, ``idtfv.deep.data``: samplers, transforms, datasets (RGB, RGB
  difference, flow, warped flow; video or rawframes, read through ``idtfv.idt.RawframesReader``; warped flow is
  ``idtfv.idt.warped_flow``, the extractor's definition). ``idtfv.deep.names``: model and modality names (no torch).
- ``idtfv.deep.train``: the trainer and ``predict``; ``idtfv.deep.aggregate``: multi-view aggregation;
  ``idtfv.deep.pretrained``: local state-dict loading with a report; ``idtfv.deep.runs``: a run directory's score
  files and stacking runs for SVM fusion (softmax and fusion themselves live in ``idtfv.classify``).
- ``idtfv.deep.stage`` / ``idtfv.deep.cli``: ``idtfv train-deep`` and ``idtfv stack-scores``.
"""
