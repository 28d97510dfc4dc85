"""Datasets: the Dataset container, readers and writers for the common file formats, and splits."""

from .dataset import Dataset, DatasetError
from .file_units import UnitInferenceWarning, infer_energy_unit
from .readers import dataset_info, format_dataset_info, load_dataset
from .splits import Split, make_split
from .writers import save_dataset, write_extxyz, write_md17_npz

__all__ = [
    "Dataset", "DatasetError", "UnitInferenceWarning", "load_dataset", "dataset_info", "format_dataset_info",
    "infer_energy_unit", "save_dataset", "write_md17_npz", "write_extxyz", "Split", "make_split",
]
