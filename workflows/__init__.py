"""The control processes, one folder each. This list is the registry: a process runs in a
deployment once it is listed here (order matters only where one reads another's state)."""

from workflows.dialing.process import PROCESS as DIALING
from workflows.qc.process import PROCESS as QC
from workflows.timeliness.process import PROCESS as TIMELINESS

PROCESSES = [TIMELINESS, DIALING, QC]
