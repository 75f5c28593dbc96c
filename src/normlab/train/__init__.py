"""Training: configuration, tasks, the loop with divergence detection, instruments and run records."""

from .config import TrainConfig
from .distributed import init_distributed
from .instruments import INSTRUMENTS, Instrument, expected_grad_norms
from .loop import make_optimizer, train
from .record import environment, read_record, write_record
from .tasks import ClassificationTask, LMTask

__all__ = ["TrainConfig", "train", "init_distributed", "make_optimizer", "LMTask", "ClassificationTask", "INSTRUMENTS", "Instrument",
           "expected_grad_norms", "environment", "write_record", "read_record"]
