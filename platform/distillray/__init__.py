"""distillray: distil BERT-family teachers into small, fast students on Ray, and serve them.

Stages, each a job under jobs/: fine-tune the teacher (Ray Train + DeepSpeed), precompute its
logits into Arrow shards (Ray Data), distil students from the shards (Ray Train + DeepSpeed),
search loss temperatures and weights (Ray Tune), serve the student over HTTP (Ray Serve).
"""

__version__ = "0.1.0"
