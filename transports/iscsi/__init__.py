"""iSCSI target driver (RFC 7143): sans-I/O protocol cores and the Trio shell around them."""
