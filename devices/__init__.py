"""Device handlers: SCSI device emulation (SBC disk, ...) over backing stores."""
