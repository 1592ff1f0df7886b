"""Target drivers: the wire protocols that carry SCSI commands to the middle level."""
