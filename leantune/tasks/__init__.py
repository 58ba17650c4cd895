"""Tasks: loaders (local files or hub), fields, labels, ICL templates and label words."""

from .files import default_data_dir
from .taskfile import load_task_file, resolve_task
from .registry import PROVIDERS, SPLITS, TASKS, Task, available_splits, carve, get_task, load_split, register_provider

__all__ = ["PROVIDERS", "register_provider", "SPLITS", "TASKS", "Task", "available_splits", "carve", "default_data_dir", "get_task", "load_split", "load_task_file", "resolve_task"]
