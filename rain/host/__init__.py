"""What Rain does on this host, for every stage: run its tools (argv lists, never a shell),
clean up after itself when killed (the reaper), run QEMU (the CPU model, the KVM probe),
and make the SSH key pairs its VMs are reached with."""
