#!/usr/bin/env python3
"""The MAWS pipeline on Kubeflow: dataset build → MAE → MAE→WSP → LiT and transfer → report.

The DAG is `mawsflow.orchestration.dag` and this command line is `mawsflow.orchestration.command`
(importable, so tests and other tools use them without this file). `--help` lists the options;
pipelines/README.md says more.
"""

import sys

from mawsflow.orchestration.command import main

if __name__ == "__main__":
    sys.exit(main())
