"""Transfer classification on the 12 data sets of BYOL v3, Table 3 (App. D.1-D.3):
`python -m transfer.classification` (cli.py). Readers of each creators' release, the frozen-feature
logistic-regression protocol, the fine-tuning protocol, and their metrics (docs/protocols.md)."""
