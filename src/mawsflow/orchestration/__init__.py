"""The Kubeflow Pipelines layer of mawsflow: typed components over the steps, what runs inside
them, and how a compiled pipeline is submitted, scheduled or run on this machine.

`dag` assembles the MAWS DAG from these pieces and `command` is its command line
(`pipelines/maws.py`). The components are Lightweight Python Components (the only kind
`kfp.local`'s SubprocessRunner runs) whose bodies import `mawsflow.orchestration.task_runtime` from
the step's image and call the steps' own entry points.
"""
