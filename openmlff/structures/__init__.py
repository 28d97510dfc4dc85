"""Starting structures: the built-in aspirin, Ac-Ala3-NHMe and chignolin, or any PDB/mmCIF/XYZ file."""

from .builtin import (Structure, amber14_net_charge, build_chignolin, capped_peptide_structure, find_builtin,
                      list_structures, load_structure,
                      one_letter_sequence, read_structure_file, structure_to_pdb, write_builtin_structures)

__all__ = ["Structure", "load_structure", "list_structures", "structure_to_pdb", "read_structure_file",
           "build_chignolin", "capped_peptide_structure", "find_builtin", "amber14_net_charge", "one_letter_sequence", "write_builtin_structures"]
