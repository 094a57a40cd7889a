"""icegate's AWS infrastructure: one construct per capability, composed by :mod:`cdk.pipeline_stack`.

Nothing here imports the data libraries (pyarrow, pyiceberg, pandera, polars) or any part of
``icegate`` other than :mod:`icegate.constants`: the Lambda handlers are named by string and run from
a container image, so synthesis stays fast and needs no Docker.
"""
