"""The only code that talks to the kernel for doctor: collects a HostSnapshot (edge)."""
