"""The exported model file, both sides: reader.py reads it (md/, metrics/, potentials/ load models through
it, without training code), writer.py writes it from training checkpoints (TorchScript, nm in, kJ/mol out,
metadata inside; docs/architecture.md "Exported model contract")."""
