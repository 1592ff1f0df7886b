"""SCSI vocabulary shared by every layer: status, sense, opcodes, CDB tables, pages."""
